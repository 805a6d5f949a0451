"""What a failure says to the user: one line, what and where, no Python class name (issue 16.3)."""

from __future__ import annotations


def error_line(e: BaseException) -> str:
    """The one line a user sees for `e`. The input, policy, run and database errors yibao raises on purpose say
    what and where in their own words; anything else is a fault of yibao itself and says so (the traceback is
    behind `--debug`)."""
    import duckdb

    from flows.ingest import InputFileError
    msg = " ".join(str(e).split())
    if isinstance(e, OSError) and getattr(e, "filename", None) and getattr(e, "strerror", None):
        return f"{e.filename}: {e.strerror}"
    if isinstance(e, InputFileError | ValueError | LookupError | OSError | RuntimeError | duckdb.Error) and msg:
        return msg  # RunError, RunRefused, InputFileError, MissingParameter, … carry their own one line
    return f"internal error ({type(e).__name__}{': ' + msg if msg else ''}); run again with --debug for the traceback"


def drop_locals(e: BaseException | None) -> None:
    """Clear the local variables of the frames a failure's traceback holds (and of its causes): the DuckDB
    connections, relations and results of the functions it passed through. Kept alive by the exception — in a
    flow run's state, or until the process exits — the bindings report each of them as leaked at interpreter exit
    (`nanobind: leaked … instances`, issue 16.3). File and line numbers stay: the traceback still prints."""
    import traceback
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if e.__traceback__ is not None:
            traceback.clear_frames(e.__traceback__)
        e = e.__cause__ or e.__context__
