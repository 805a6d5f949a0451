"""Suizhou urban-rural resident scheme (POLICY §3)."""
