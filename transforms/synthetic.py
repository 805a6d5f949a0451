"""Synthetic bureau data for `yibao sample` (pure: parameters in, polars frames out, no file I/O).

What a Hubei bureau would drop into the pipeline (DATA.md §1–§3): the registers (persons of Suizhou
and Xiangyang, resident identities, employee status periods, certified diseases, institutions,
family mutual-aid bindings, opening account balances), monthly hospital and pharmacy settlement
lines and a few assistance applications.

Design
- Randomness is a counter-based hash (`_Rng`): every draw is a pure function of (seed, stream name,
  key), where the key is a person's global index or a line's key. No sequential state, so a person
  is the same whatever the chunking, and generation is vectorized in polars (numpy is not used).
- Generation is per chunk of persons (`generate_chunk`); a chunk's registers and its lines for the
  whole period are produced together, so bounded memory is the chunk's size, not the run's.
- Money is integer fen (`Int64`) in the typed frames; `*_as_text` turn frames into the text a bureau
  writes (yuan with exactly 2 decimals, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS`, `true`/`false`).
- A small fixed cast of "showcase" persons at the start of chunk 0 carries every case the tests and
  the demo need (each identity, certification kind, med_type, offsite type, 13→24 pair, a mutual
  binding pair, an authoriser with six users, mid-year retirement, an application, …), so that the
  cases exist even in a few hundred persons; everyone else is drawn from the rates below.
- `InvalidInjector` replaces a fraction of settlement rows by rows that each break exactly one rule of
  `transforms/reasons.py`, cycling through the reasons, and records where it put them.
"""

from __future__ import annotations

import calendar
import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from transforms.money import fen_to_yuan_text, yuan_text_to_fen
from transforms.reasons import EVENT_ONLY_REASONS, REJECT_REASONS

# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleParams:
    persons: int = 2000
    year: int = 2025
    months: int = 12
    seed: int = 20250101
    chunk_persons: int = 200_000

    def __post_init__(self) -> None:
        if self.persons < 1:
            raise ValueError("persons must be at least 1")
        if not 1 <= self.months <= 12:
            raise ValueError("months must be between 1 and 12")
        if self.chunk_persons < 1:
            raise ValueError("chunk_persons must be at least 1")
        if not 2000 <= self.year <= 2100:
            raise ValueError("year must be between 2000 and 2100")

    @property
    def n_chunks(self) -> int:
        return -(-self.persons // self.chunk_persons)

    @property
    def start(self) -> date:
        return date(self.year, 1, 1)

    @property
    def end(self) -> date:
        """Last day of the generated period (end of month `months`)."""
        return date(self.year, self.months, calendar.monthrange(self.year, self.months)[1])

    @property
    def period_days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def year_days(self) -> int:
        return (date(self.year, 12, 31) - self.start).days + 1

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        lo = chunk * self.chunk_persons
        return lo, min(self.persons, lo + self.chunk_persons)

    def month_labels(self) -> list[str]:
        return [f"{self.year}-{m:02d}" for m in range(1, self.months + 1)]


# --------------------------------------------------------------------------------------------------
# Geography, codes, names
# --------------------------------------------------------------------------------------------------

SUIZHOU = "4213"
XIANGYANG = "4206"
HOME_COUNTIES: dict[str, tuple[str, str, float]] = {
    # code: (name, city, population weight within the city)
    "421302": ("随州高新区", SUIZHOU, 0.10),
    "421303": ("曾都区", SUIZHOU, 0.33),
    "421321": ("随县", SUIZHOU, 0.30),
    "421381": ("广水市", SUIZHOU, 0.27),
    "420602": ("襄城区", XIANGYANG, 0.08),
    "420606": ("樊城区", XIANGYANG, 0.16),
    "420607": ("襄州区", XIANGYANG, 0.16),
    "420624": ("南漳县", XIANGYANG, 0.09),
    "420625": ("谷城县", XIANGYANG, 0.10),
    "420626": ("保康县", XIANGYANG, 0.05),
    "420682": ("老河口市", XIANGYANG, 0.08),
    "420683": ("枣阳市", XIANGYANG, 0.18),
    "420684": ("宜城市", XIANGYANG, 0.10),
}
CITY_NAMES = {SUIZHOU: "随州市", XIANGYANG: "襄阳市"}
# Areas outside both cities: (code, name, level-3 count, level-2, level-1 offsite-enabled, level-1 not, township, village, pharmacies)
OUT_AREAS: list[tuple[str, str, tuple[int, int, int, int, int, int, int]]] = [
    ("420102", "武汉市江岸区", (2, 1, 1, 1, 1, 0, 1)),
    ("420106", "武汉市武昌区", (3, 1, 1, 0, 1, 0, 1)),
    ("420111", "武汉市洪山区", (1, 1, 1, 1, 1, 2, 1)),
    ("420502", "宜昌市西陵区", (1, 1, 1, 0, 1, 1, 1)),
    ("110105", "北京市朝阳区", (2, 1, 1, 1, 0, 0, 0)),
    ("440106", "广州市天河区", (2, 1, 1, 0, 1, 0, 0)),
    ("310104", "上海市徐汇区", (1, 0, 0, 1, 0, 0, 0)),
    ("410105", "郑州市金水区", (1, 1, 1, 0, 0, 0, 0)),
]

IDENTITY_SHARES: dict[str, float] = {
    "tekun": 0.005,
    "orphan": 0.001,
    "dibao": 0.02,
    "fanpin": 0.01,
    "dibao_edge": 0.005,
    "monitor_unstable": 0.006,
    "monitor_edge": 0.006,
    "monitor_sudden": 0.003,
    "illness_poor": 0.003,
    "other_hardship": 0.001,
    "disabled": 0.02,
    "mental": 0.005,
    "family_planning": 0.002,
    "poverty_exit": 0.05,
    "veteran": 0.005,
}
IDENTITIES = list(IDENTITY_SHARES)
LOW_INCOME_IDENTITIES = {  # S1, S2 and poverty_exit (POLICY §3.10, A-9)
    "tekun", "orphan", "dibao", "fanpin", "dibao_edge", "monitor_unstable", "monitor_edge",
    "monitor_sudden", "illness_poor", "other_hardship", "poverty_exit",
}
ASSISTANCE_IDENTITIES = [  # classes 1–4 (POLICY §3.9)
    "tekun", "orphan", "dibao", "fanpin", "dibao_edge", "monitor_unstable", "monitor_edge",
    "monitor_sudden", "illness_poor",
]

# Certified diseases: code -> (ICD-10, kind). Two-disease codes are resident certifications.
CERT_CODES: dict[str, tuple[str, str]] = {
    "M03900": ("I10", "hypertension"),
    "M01600": ("E11.9", "diabetes"),
    "M03901": ("I10", "chronic"),  # employees' and Xiangyang residents' chronic hypertension
    "M01601": ("E11.9", "chronic"),
    "M03903": ("I11.9", "chronic"),  # hypertensive heart disease: a chronic cert meaning hypertension (A-23)
    "M01603": ("E11.5", "chronic"),  # diabetes with complications: a chronic cert meaning diabetes (A-23)
    "M04500": ("I25.1", "chronic"),
    "M05300": ("J44.9", "chronic"),
    "M07800": ("M06.9", "chronic"),
    "M00101": ("B18.1", "chronic"),
    "M09700": ("M45", "chronic"),
    "M06900": ("I69.3", "chronic"),
    "M02500": ("G20", "chronic"),
    "M00800": ("C34.9", "special"),
    "M00801": ("C50.9", "special"),
    "M00802": ("C16.9", "special"),
    "M00803": ("C22.0", "special"),
    "M07100": ("N18.4", "special"),
    "M01400": ("D61.9", "special"),
    "M01200": ("D66", "special"),
    "M07101": ("N18.5", "special_dialysis"),
    "M08300": ("Z94.0", "special_transplant"),
    "M02200": ("F20.9", "special_mental"),
    "M02201": ("F31.9", "special_mental"),
    "YP0101": ("C34.9", "special_drug"),
    "YP0102": ("C50.9", "special_drug"),
    "YP0201": ("M06.9", "special_drug"),
}
CERT_KINDS = [
    "hypertension", "diabetes", "chronic", "special", "special_transplant", "special_dialysis",
    "special_mental", "special_drug",
]
# Chronic disease draw: weights over codes (the I11/E11 ones exercise A-23).
CHRONIC_CODES = {"M04500": 30, "M05300": 20, "M07800": 10, "M00101": 8, "M09700": 4, "M06900": 12, "M02500": 4,
                 "M03903": 7, "M01603": 5}
SPECIAL_CODES = {"M00800": 30, "M00801": 25, "M00802": 15, "M00803": 10, "M07100": 12, "M01400": 5, "M01200": 3}
DRUG_CODES = {"YP0101": 50, "YP0102": 30, "YP0201": 20}
MENTAL_CODES = {"M02200": 70, "M02201": 30}

MED_TYPES = ["11", "13", "14", "140104", "140201", "9901", "21", "22", "24", "28", "41", "51", "52"]
STAY_MED_TYPES = {"21", "22", "24", "28", "52"}

DIAGNOSES: dict[str, dict[str, float]] = {
    "11": {"J06.9": 20, "J20.9": 10, "K29.7": 8, "M54.5": 8, "I10": 10, "E11.9": 5, "K52.9": 5, "R51": 4,
           "J02.9": 8, "L30.9": 4, "H10.9": 3, "N39.0": 4, "M17.9": 6, "K05.1": 3},
    "13": {"R10.4": 20, "J18.9": 15, "S01.8": 15, "T78.4": 8, "R50.9": 15, "I20.0": 12, "K35.8": 8, "S52.5": 7},
    "41": {"J06.9": 30, "I10": 20, "E11.9": 12, "K29.7": 10, "M54.5": 10, "R05": 10, "J45.9": 8},
    "21": {"I63.9": 14, "J18.9": 14, "I25.1": 10, "K80.2": 8, "J44.1": 10, "N20.0": 6, "K56.7": 4, "I50.9": 8,
           "C34.9": 5, "M51.2": 6, "E11.9": 5, "K35.8": 6, "I10": 4},
    "22": {"S72.0": 25, "S82.2": 20, "S06.0": 20, "S42.2": 15, "T14.9": 10, "S32.0": 10},
    "24": {"I21.9": 25, "I63.9": 25, "J44.1": 15, "K92.2": 10, "I61.9": 10, "S06.5": 10, "K35.8": 5},
    "28": {"H25.9": 40, "K40.9": 20, "N20.0": 15, "K80.2": 10, "D25.9": 8, "I83.9": 7},
    "51": {"Z34.9": 80, "Z36.9": 10, "O20.0": 10},
    "52": {"O80.0": 62, "O82.0": 33, "O04.9": 5},
}

# Where care happens: "<scope>|<kind>"; scope C = the person's county, T = the person's city,
# H = Hubei outside the person's city, N = outside Hubei.
WHERE: dict[str, dict[str, float]] = {
    "11R": {"C|village": 40, "C|township": 30, "C|L1": 6, "C|L2": 12, "T|L3": 6, "H|L1off": 2, "H|L1any": 1,
            "H|L2": 1, "H|L3": 1, "N|L1off": 0.5, "N|L3": 0.5},
    "11E": {"C|township": 12, "C|L1": 14, "C|L2": 28, "T|L3": 36, "H|L1off": 2, "H|L1any": 1.5, "H|L3": 3,
            "N|L1off": 1.5, "N|L3": 2},
    "13": {"C|L2": 45, "T|L3": 40, "H|L3": 8, "H|L2": 3, "N|L3": 4},
    "14c": {"C|township": 4, "C|L2": 40, "T|L3": 48, "H|L3": 6, "N|L3": 2},
    "14s": {"C|L2": 25, "T|L3": 60, "H|L3": 11, "N|L3": 4},
    "9901": {"C|village": 25, "C|township": 40, "C|L1": 5, "C|L2": 20, "T|L3": 10},
    "21R": {"C|township": 18, "C|L1": 6, "C|L2": 40, "T|L3": 25, "H|L2": 1, "H|L3": 8, "N|L3": 2},
    "21E": {"C|township": 5, "C|L1": 5, "C|L2": 30, "T|L3": 45, "H|L3": 11, "N|L3": 4},
    "22": {"C|township": 2, "C|L2": 45, "T|L3": 40, "H|L3": 10, "N|L3": 3},
    "24": {"C|L2": 38, "T|L3": 44, "H|L2": 2, "H|L3": 10, "N|L3": 6},
    "28": {"C|L2": 30, "T|L3": 58, "H|L3": 10, "N|L3": 2},
    "41": {"C|pharmacy": 78, "T|pharmacy": 18, "H|pharmacy": 4},
    "41d": {"T|pharmacy": 80, "H|pharmacy": 20},
    "51": {"C|township": 35, "C|L2": 40, "T|L3": 23, "H|L3": 2},
    "52": {"C|township": 8, "C|L2": 52, "T|L3": 34, "H|L3": 5, "N|L3": 1},
    "app": {"T|L3": 70, "H|L3": 30},
}
PRESCRIBER = {"p": {"C|township": 25, "C|L1": 15, "C|L2": 40, "T|L3": 20}}
PRESCRIBER_DRUG = {"p": {"C|L2": 30, "T|L3": 70}}

# Offsite type of out-of-city lines ("" = left empty, inferred by the engine, POLICY §1.9).
OFFSITE: dict[str, dict[str, float]] = {
    "stay": {"101": 45, "903": 25, "": 30},
    "emerg": {"101": 55, "903": 5, "": 40},
    "op": {"903": 40, "101": 10, "": 50},
}

# Amount classes: (median yuan, sigma of the log). Medians scale with the institution's level.
AMOUNTS: dict[str, tuple[float, float]] = {
    "11": (70, 0.75), "13": (380, 0.8), "41": (90, 0.8), "41d": (5500, 0.5), "9901": (110, 0.45),
    "14c": (450, 0.6), "14s": (2600, 0.8), "14dial": (4600, 0.25), "14tx": (3200, 0.4), "14mental": (600, 0.5),
    "14drug": (6000, 0.55), "21": (6500, 0.85), "22": (9000, 0.8), "24": (12000, 0.85), "28": (6000, 0.45),
    "51": (220, 0.6), "52": (4500, 0.4), "app": (45000, 0.35),
}
STAY_CLASSES = {"21", "22", "24", "28", "52", "app"}

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
            "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN_M = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆帅旭宁龙林欢阳建国志文海峰亮成东兵新春锋"
GIVEN_F = "芳娜敏静丽艳娟霞秀英华玲燕红梅琳婷雪慧莉萍倩颖洁佳欣怡雯晶楠丹兰凤琴云萌瑶璐琪蓉"
TOWN_A = "东西南北新安永长青白石黄高三双太平马杨柳洪厉草万"
TOWN_B = "山河岗店桥湾坪集庙铺湖港林畈冲寨"
PHARMACY_BRANDS = ["百姓", "仁济", "同济堂", "国药", "益丰", "九州通", "康民", "福寿堂"]

CERTNO_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CERTNO_CHECK = "10X98765432"


def certno_checksum(body17: str) -> str:
    """GB 11643 check character of the first 17 digits."""
    return CERTNO_CHECK[sum(int(c) * w for c, w in zip(body17, CERTNO_WEIGHTS, strict=True)) % 11]


def certno_valid(certno: str) -> bool:
    return (
        len(certno) == 18 and certno[:17].isdigit() and certno_checksum(certno[:17]) == certno[17]
    )


# --------------------------------------------------------------------------------------------------
# Counter-based random numbers on polars expressions
# --------------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_TWO32 = float(2**32)


def _mulmod32(x: pl.Expr, m: int) -> pl.Expr:
    """(x * m) mod 2^32 for x in [0, 2^32), without leaving Int64."""
    lo, hi = m & 0xFFFF, m >> 16
    return ((x * lo) + (((x * hi) & 0xFFFF) * 65536)) & _M32


_X = pl.col("x")
# lowbias32 (a 32-bit bijection with good avalanche), one small expression per step: evaluated step by step,
# because chaining them into one expression would reference `x` exponentially often.
_MIX_STEPS = [
    _X ^ (_X // 65536),
    _mulmod32(_X, 0x7FEB352D),
    _X ^ (_X // 32768),
    _mulmod32(_X, 0x846CA68B),
    _X ^ (_X // 65536),
]


def _lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def hash_key(key: int, salt: int) -> int:
    """The hash of one key (what `_hash_series` computes for each element)."""
    h = _lowbias32((key & _M32) ^ (salt & _M32))
    return _lowbias32((h + (key >> 32) + (salt >> 32)) & _M32)


_SMALL = 4096  # below this many keys, plain Python beats the per-step overhead of polars


def _hash_series(keys: pl.Series, salt: int) -> pl.Series:
    """Two rounds of lowbias32 over (key, salt): UInt32-valued Int64 Series."""
    if keys.len() < _SMALL:
        return pl.Series(keys.name, [None if k is None else hash_key(k, salt) for k in keys.cast(pl.Int64).to_list()],
                         dtype=pl.Int64)
    df = pl.DataFrame({"k": keys.cast(pl.Int64)}).select(
        x=(pl.col("k") & _M32) ^ (salt & _M32), hi=pl.col("k") // 2**32)
    for step in _MIX_STEPS:
        df = df.with_columns(x=step)
    df = df.with_columns(x=(_X + pl.col("hi") + (salt >> 32)) & _M32)
    for step in _MIX_STEPS:
        df = df.with_columns(x=step)
    return df.get_column("x")


class _Rng:
    def __init__(self, seed: int):
        self.seed = seed

    def _salt(self, stream: str) -> int:
        d = hashlib.blake2b(f"{self.seed}\x00{stream}".encode(), digest_size=8).digest()
        return int.from_bytes(d, "big")

    def u32(self, key: pl.Expr, stream: str) -> pl.Expr:
        salt = self._salt(stream)
        return key.map_batches(lambda s: _hash_series(s, salt), return_dtype=pl.Int64, is_elementwise=True)

    def u(self, key: pl.Expr, stream: str) -> pl.Expr:
        """Uniform in (0, 1)."""
        return (self.u32(key, stream).cast(pl.Float64) + 0.5) / _TWO32

    def int(self, key: pl.Expr, stream: str, n: int | pl.Expr) -> pl.Expr:
        """Uniform integer in [0, n)."""
        nn = n if isinstance(n, pl.Expr) else pl.lit(n)
        return (self.u(key, stream) * nn.cast(pl.Float64)).floor().cast(pl.Int64)

    def normal(self, key: pl.Expr, stream: str) -> pl.Expr:
        u1 = self.u(key, stream + ":n1")
        u2 = self.u(key, stream + ":n2")
        return (-2.0 * u1.log()).sqrt() * (2.0 * math.pi * u2).cos()


def _choose(df: pl.DataFrame, group: pl.Expr, u: pl.Expr, table: dict[str, dict[str, float]]) -> pl.Series:
    """Weighted choice per row: the option of `table[group]` picked by the uniform `u`."""
    groups = sorted(table)
    bounds: list[float] = []
    options: list[str] = []
    for gi, g in enumerate(groups):
        items = [(o, w) for o, w in table[g].items() if w > 0]
        total = sum(w for _, w in items)
        acc = 0.0
        for j, (o, w) in enumerate(items):
            acc += w
            bounds.append(gi + (1.0 if j == len(items) - 1 else acc / total))
            options.append(o)
    if df.height == 0:
        return pl.Series([], dtype=pl.String)
    v = df.select(
        group.replace_strict({g: float(i) for i, g in enumerate(groups)}, return_dtype=pl.Float64) + u
    ).to_series()
    idx = pl.Series(bounds).search_sorted(v, side="right")
    return pl.Series(options, dtype=pl.String).gather(idx)


def _pick(df: pl.DataFrame, u: pl.Expr, weights: dict[str, float]) -> pl.Series:
    return _choose(df, pl.lit("x"), u, {"x": weights})


def _days(d: date) -> int:
    return d.toordinal()


def _date_from_offset(base: date, offset: pl.Expr) -> pl.Expr:
    return pl.lit(base) + pl.duration(days=offset)


def _offset_of(col: pl.Expr, base: date) -> pl.Expr:
    return (col - pl.lit(base)).dt.total_days().cast(pl.Int64)


# --------------------------------------------------------------------------------------------------
# Institutions (one register for the whole run)
# --------------------------------------------------------------------------------------------------

INSTITUTION_COLUMNS = [
    "fixmedins_code", "fixmedins_name", "fixmedins_type", "dedc_hosp_lv", "facility", "admdvs",
    "offsite_outpatient_enabled",
]


def generate_institutions(p: SampleParams) -> pl.DataFrame:
    """Institutions and pharmacies: every level and facility in every home county and city, plus
    out-of-city Hubei (Wuhan, Yichang) and out-of-province areas; counts grow with `persons`."""
    rng = random.Random(f"{p.seed}:institutions")
    rows: list[dict[str, object]] = []
    counters: dict[str, int] = {}

    def add(admdvs: str, name: str, facility: str, level: str, enabled: bool) -> None:
        prefix = "P" if facility == "pharmacy" else "H"
        counters[prefix + admdvs] = counters.get(prefix + admdvs, 0) + 1
        rows.append({
            "fixmedins_code": f"{prefix}{admdvs}{counters[prefix + admdvs]:05d}",
            "fixmedins_name": name,
            "fixmedins_type": "pharmacy" if facility == "pharmacy" else "hospital",
            "dedc_hosp_lv": level,
            "facility": facility,
            "admdvs": admdvs,
            "offsite_outpatient_enabled": enabled,
        })

    used_names: set[str] = set()

    def town() -> str:
        """A place name not used before (two characters while they last, then three, then numbered)."""
        for n_chars, tries in ((2, 30), (3, 30)):
            for _ in range(tries):
                t = rng.choice(TOWN_A) + "".join(rng.choice(TOWN_B) for _ in range(n_chars - 1))
                if t not in used_names:
                    used_names.add(t)
                    return t
        t = f"{rng.choice(TOWN_A)}{rng.choice(TOWN_B)}{len(used_names)}"
        used_names.add(t)
        return t

    s = p.persons / len(HOME_COUNTIES)  # persons per county (roughly)
    n_village = min(2000, max(6, round(s / 1500)))  # ~1 village clinic per 1,500 persons
    n_township = min(120, max(2, round(s / 40_000)))
    n_l1 = min(60, max(1, round(s / 80_000)))
    n_l2 = min(10, max(1, round(s / 300_000)))
    n_pharm = min(1500, max(3, round(s / 3000)))
    for code, (cname, _city, _w) in HOME_COUNTIES.items():
        for _ in range(n_township):
            t = town()
            kind = "社区卫生服务中心" if rng.random() < 0.3 else "镇卫生院"
            add(code, f"{cname}{t}{kind}", "township", "1", rng.random() < 0.7)
            # village clinics are spread over the townships
        for _ in range(n_village):
            add(code, f"{cname}{town()}村卫生室", "village_clinic", "1", rng.random() < 0.5)
        for i in range(n_l1):
            add(code, f"{cname}{town()}{'骨科' if i % 2 else '中心'}医院", "hospital", "1", rng.random() < 0.6)
        add(code, f"{cname}人民医院", "hospital", "2", True)
        for i in range(1, n_l2):
            add(code, f"{cname}{'中医医院' if i == 1 else f'第{i + 1}人民医院'}", "hospital", "2", True)
        for i in range(n_pharm):
            brand = PHARMACY_BRANDS[rng.randrange(len(PHARMACY_BRANDS))]
            add(code, f"{brand}大药房({cname}{i + 1}店)", "pharmacy", "1", rng.random() < 0.4)
    n_l3_sz = max(2, min(8, round(p.persons / 500_000)))
    n_l3_xy = max(4, min(12, round(p.persons / 300_000)))
    l3_names = ["中心医院", "中医医院", "第一人民医院", "妇幼保健院", "第二人民医院", "第三人民医院", "第四人民医院",
                "口腔医院", "第五人民医院", "精神卫生中心", "第六人民医院", "肿瘤医院"]
    for i in range(n_l3_sz):
        add("421303" if i % 3 != 2 else "421381", f"随州市{l3_names[i]}", "hospital", "3", True)
    xy_l3_counties = ["420606", "420602", "420606", "420607", "420683", "420682"]
    for i in range(n_l3_xy):
        add(xy_l3_counties[i % len(xy_l3_counties)], f"襄阳市{l3_names[i]}", "hospital", "3", True)
    mult = max(1, min(20, round(p.persons / 200_000)))
    for code, aname, (l3, l2, l1on, l1off, tw, vil, ph) in OUT_AREAS:
        for i in range(l3 * mult if code.startswith("42") else l3):
            add(code, f"{aname}{l3_names[i % len(l3_names)]}" + (f"({i // len(l3_names) + 1}院区)" if i >= len(l3_names) else ""),
                "hospital", "3", True)
        for i in range(l2 * mult if code.startswith("42") else l2):
            add(code, f"{aname}第{i + 1}医院", "hospital", "2", True)
        for _ in range(l1on * mult):
            add(code, f"{aname}{town()}街社区医院", "hospital", "1", True)
        for _ in range(l1off * mult):
            add(code, f"{aname}{town()}门诊部", "hospital", "1", False)
        for j in range(tw * mult):
            add(code, f"{aname}{town()}街社区卫生服务中心", "township", "1", j % 2 == 0)
        for j in range(vil * mult):
            add(code, f"{aname}{town()}村卫生室", "village_clinic", "1", j % 2 == 1)
        for i in range(ph * mult):
            add(code, f"{PHARMACY_BRANDS[i % len(PHARMACY_BRANDS)]}大药房({aname}{i + 1}店)", "pharmacy", "1", True)
    return pl.DataFrame(rows, schema={
        "fixmedins_code": pl.String, "fixmedins_name": pl.String, "fixmedins_type": pl.String,
        "dedc_hosp_lv": pl.String, "facility": pl.String, "admdvs": pl.String,
        "offsite_outpatient_enabled": pl.Boolean,
    }).sort("fixmedins_code")


def _institution_pools(inst: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(pools: pool key -> offset, size; members: flat position -> institution)."""
    kinds: list[tuple[str, str]] = []
    for r in inst.iter_rows(named=True):
        fac, lv, en = r["facility"], r["dedc_hosp_lv"], r["offsite_outpatient_enabled"]
        if fac == "pharmacy":
            ks = ["pharmacy"]
        elif fac == "hospital" and lv in ("2", "3"):
            ks = ["L" + lv]
        else:
            ks = {"village_clinic": ["village"], "township": ["township"], "hospital": ["L1"]}[fac] + ["L1any"]
            if en:
                ks.append("L1off")
        adm = r["admdvs"]
        for k in ks:
            keys = []
            if adm in HOME_COUNTIES:
                keys.append(f"C{adm}|{k}")
            if adm[:4] in (SUIZHOU, XIANGYANG):
                keys.append(f"T{adm[:4]}|{k}")
            for home in (SUIZHOU, XIANGYANG):
                if adm[:2] == "42" and adm[:4] != home:
                    keys.append(f"H{home}|{k}")
            if adm[:2] != "42":
                keys.append(f"N|{k}")
            kinds.extend((key, r["fixmedins_code"]) for key in keys)
    members = (
        pl.DataFrame(kinds, schema={"pool": pl.String, "fixmedins_code": pl.String}, orient="row")
        .sort("pool", "fixmedins_code")
        .with_row_index("pos")
        .with_columns(pl.col("pos").cast(pl.Int64))
    )
    pools = members.group_by("pool").agg(
        offset=pl.col("pos").min(), size=pl.len().cast(pl.Int64)
    ).sort("pool")
    members = members.join(inst, on="fixmedins_code", how="left", maintain_order="left")
    return pools, members


# --------------------------------------------------------------------------------------------------
# Showcase persons (chunk 0): the cases everybody needs to exist
# --------------------------------------------------------------------------------------------------

N_SHOWCASE = 32
# pos: (county, insutype, gend, age, retired, rural, emp_event, flexible, contrib_mode, brdy_frac)
# age -1 = born during the year. brdy_frac positions the birthday in its year (None: random).
_SHOW_PERSONS: dict[int, tuple] = {
    0: ("421321", "390", "1", 45, False, True, None, None, None, None),
    1: ("421303", "390", "2", 62, False, False, None, None, None, None),
    2: ("421381", "390", "2", 29, False, True, None, None, None, None),
    3: ("421302", "390", "1", 58, False, False, None, None, None, None),
    4: ("421303", "390", "1", 66, False, True, None, None, None, None),
    5: ("421321", "390", "2", 50, False, True, None, None, None, None),
    6: ("421381", "390", "1", 40, False, False, None, None, None, None),
    7: ("421303", "390", "2", 35, False, False, None, None, None, None),
    8: ("420606", "310", "1", 42, False, False, "none", False, "combined", None),
    9: ("420606", "310", "2", 40, False, False, "none", False, "combined", None),
    10: ("420606", "390", "2", 15, False, False, None, None, None, None),
    11: ("420606", "390", "1", 10, False, False, None, None, None, None),
    12: ("420602", "310", "1", 70, True, False, "none", False, "combined", None),
    13: ("420602", "390", "2", 68, False, False, None, None, None, None),
    14: ("420607", "310", "1", 22, False, False, "new_flexible", True, "combined", None),
    15: ("420606", "310", "2", 39, False, False, "none", False, "combined", None),
    16: ("420607", "310", "1", 59, False, False, "retire_mid", False, "combined", 0.45),
    17: ("420683", "310", "2", 45, False, False, "suspended", True, "pooling_only", None),
    18: ("420684", "310", "1", 50, False, False, "arrears", False, "combined", None),
    19: ("420625", "310", "2", 33, False, False, "unverified", False, "combined", None),
    20: ("420682", "310", "1", 47, False, False, "terminated", False, "combined", None),
    21: ("420606", "310", "1", 25, False, False, "new_employer", False, "combined", None),
    22: ("421303", "390", "1", 71, False, False, None, None, None, None),
    23: ("421321", "390", "2", 64, False, True, None, None, None, None),
    24: ("421381", "390", "1", 55, False, True, None, None, None, None),
    25: ("421302", "390", "2", 44, False, False, None, None, None, None),
    26: ("421303", "390", "1", 52, False, False, None, None, None, None),
    27: ("420606", "310", "2", 57, True, False, "none", False, "combined", None),
    28: ("420606", "390", "1", 45, False, False, None, None, None, None),
    29: ("421303", "390", "2", -1, False, False, None, None, None, 0.05),
    30: ("420606", "310", "1", 35, False, False, "switch_flexible", False, "combined", None),
    31: ("421321", "390", "1", 30, False, True, None, None, None, None),
}
# (pos, identity, begin, end): "old" = years before; a float = fraction of the period.
_SHOW_IDENTITIES = [
    (0, "dibao", "old", None), (1, "tekun", "old", None), (1, "disabled", "old", None),
    (2, "poverty_exit", "old", None), (23, "poverty_exit", "old", None), (4, "fanpin", 0.3, None),
    (7, "mental", "old", None), (24, "illness_poor", 0.6, None), (31, "monitor_unstable", "old", 0.5),
    (31, "monitor_edge", 0.5, None), (5, "dibao_edge", "old", None), (6, "veteran", "old", None),
    (26, "family_planning", "old", None), (22, "other_hardship", "old", 0.8), (13, "monitor_sudden", "old", None),
    (11, "orphan", "old", None),
]
_SHOW_CERTS = [  # (pos, code)
    (1, "M03900"), (1, "M01600"), (3, "M03900"), (3, "M03903"), (4, "M00800"), (4, "YP0101"),
    (5, "M07101"), (6, "M08300"), (7, "M02200"), (27, "M01601"), (0, "M05300"),
]
# (pos, med_type, where, day fraction, los, extras)
_SHOW_VISITS: list[tuple[int, str, str, float, int, dict]] = [
    (0, "22", "C|L2", 0.35, 9, {"trauma": False}),
    (0, "22", "C|L2", 0.75, 6, {"trauma": True}),
    (0, "14", "T|L3", 0.2, 0, {"cert": "M05300"}),
    (1, "9901", "C|township", 0.1, 0, {"cert": "M03900"}),
    (1, "9901", "C|village", 0.5, 0, {"cert": "M01600"}),
    (2, "51", "C|township", 0.15, 0, {}), (2, "51", "C|township", 0.3, 0, {}),
    (2, "51", "C|L2", 0.45, 0, {"dise": "O20.0"}), (2, "52", "C|L2", 0.62, 4, {"dise": "O80.0"}),
    (3, "140104", "C|L2", 0.25, 0, {"cert": "M03903"}), (3, "9901", "C|township", 0.3, 0, {"cert": "M03900"}),
    (4, "140201", "T|L3", 0.15, 0, {"cert": "M00800"}), (4, "14", "T|L3", 0.22, 0, {"cert": "YP0101"}),
    (4, "41", "T|pharmacy", 0.4, 0, {"cert": "YP0101", "presc": True}),
    (4, "21", "H|L3", 0.55, 24, {"total": 268_000, "offsite": "101"}),
    (4, "21", "T|L3", 0.85, 15, {"total": 84_000}),
    (5, "14", "C|L2", 0.1, 0, {"cert": "M07101"}), (5, "140201", "T|L3", 0.4, 0, {"cert": "M07101"}),
    (6, "140201", "T|L3", 0.3, 0, {"cert": "M08300"}),
    (7, "14", "T|L3", 0.33, 0, {"cert": "M02200"}),
    (8, "11", "T|L3", 0.2, 0, {}), (8, "41", "C|pharmacy", 0.3, 0, {"presc": True}),
    (9, "41", "C|pharmacy", 0.25, 0, {"presc": False}), (10, "11", "C|township", 0.4, 0, {}),
    (12, "21", "T|L3", 0.5, 8, {}), (13, "11", "C|township", 0.45, 0, {}),
    (14, "11", "C|L1", 0.1, 0, {}), (14, "11", "C|L1", 0.7, 0, {}),
    (16, "11", "C|L2", 0.3, 0, {}), (16, "11", "C|L2", 0.8, 0, {}),
    (17, "11", "C|L2", 0.4, 0, {}), (20, "11", "T|L3", 0.9, 0, {}), (21, "21", "C|L2", 0.6, 5, {}),
    (22, "13", "T|L3", 0.3, 0, {"rescue": True}),
    (22, "24", "T|L3", 0.6, 10, {"rescue": True, "pair": True}),
    (23, "21", "C|township", 0.45, 7, {"oos_bp": 1500}),
    (24, "21", "T|L3", 0.35, 18, {"total": 62_000}),
    (25, "11", "H|L1off", 0.2, 0, {"offsite": "903"}), (25, "11", "H|L1off", 0.3, 0, {"offsite": ""}),
    (25, "21", "N|L3", 0.5, 12, {"offsite": "903"}), (25, "21", "N|L3", 0.8, 9, {"offsite": "101"}),
    (25, "24", "H|L3", 0.65, 6, {"offsite": "", "pair": True, "rescue": False}),
    (26, "28", "T|L3", 0.4, 1, {}), (26, "28", "H|L3", 0.7, 0, {"offsite": "101"}),
    (27, "14", "C|L2", 0.2, 0, {"cert": "M01601"}), (27, "140104", "T|L3", 0.6, 0, {"cert": "M01601"}),
    (27, "41", "T|pharmacy", 0.5, 0, {"presc": True}),
    (28, "11", "C|township", 0.15, 0, {}), (29, "11", "C|township", 0.5, 0, {}),
    (30, "24", "N|L3", 0.55, 7, {"offsite": "", "pair": True, "rescue": True}),
    (30, "13", "H|L3", 0.25, 0, {"offsite": "101"}),
    (31, "21", "C|L1", 0.4, 5, {}), (15, "51", "C|L2", 0.3, 0, {}), (15, "52", "T|L3", 0.5, 5, {"dise": "O82.0"}),
]


# --------------------------------------------------------------------------------------------------
# Persons
# --------------------------------------------------------------------------------------------------

PERSON_COLUMNS = ["psn_no", "certno", "psn_name", "gend", "brdy", "insutype", "insuplc_admdvs", "rural", "enrol_date"]

_RESIDENT_AGE_BANDS = {"-1:-1": 0.8, "0:6": 6.5, "7:17": 14, "18:39": 22, "40:59": 28, "60:74": 19, "75:94": 9.7}
_EMP_EVENTS_ACTIVE = {"none": 84.0, "new_employer": 2.0, "new_flexible": 2.0, "switch_flexible": 1.5,
                      "suspended": 3.0, "arrears": 2.0, "unverified": 2.5, "terminated": 1.5}
_EMP_EVENTS_RETIRED = {"none": 96.5, "suspended": 1.0, "unverified": 1.0, "terminated": 1.5}


def _persons(p: SampleParams, chunk: int, r: _Rng) -> pl.DataFrame:
    lo, hi = p.chunk_range(chunk)
    k = pl.col("idx")
    df = pl.DataFrame({"idx": pl.int_range(lo, hi, eager=True, dtype=pl.Int64)})
    df = df.with_columns(
        city=pl.when(r.u(k, "city") < 0.6).then(pl.lit(SUIZHOU)).otherwise(pl.lit(XIANGYANG)),
        u_scheme=r.u(k, "scheme"),
    )
    county_table = {
        c: {code: w for code, (_n, city, w) in HOME_COUNTIES.items() if city == c} for c in (SUIZHOU, XIANGYANG)
    }
    df = df.with_columns(county=_choose(df, pl.col("city"), r.u(k, "county"), county_table))
    df = df.with_columns(
        insutype=pl.when((pl.col("city") == XIANGYANG) & (pl.col("u_scheme") < 0.72))
        .then(pl.lit("310")).otherwise(pl.lit("390")),
    ).with_columns(
        retired=(pl.col("insutype") == "310") & (r.u(k, "retired") < 0.30),
        gend=pl.when(r.u(k, "gend") < pl.when(pl.col("insutype") == "310").then(0.55).otherwise(0.5))
        .then(pl.lit("1")).otherwise(pl.lit("2")),
        band=_choose(df, pl.lit("r"), r.u(k, "ageband"), {"r": _RESIDENT_AGE_BANDS}),
    )
    ra = pl.when(pl.col("gend") == "1").then(60).otherwise(55)
    band_lo = pl.col("band").str.split(":").list.get(0).cast(pl.Int64)
    band_hi = pl.col("band").str.split(":").list.get(1).cast(pl.Int64)
    df = df.with_columns(
        age=pl.when(pl.col("insutype") == "390")
        .then(band_lo + r.int(k, "age", band_hi - band_lo + 1))
        .when(pl.col("retired"))
        .then(ra + (r.u(k, "age").pow(1.6) * (93 - ra)).floor().cast(pl.Int64))
        .otherwise(20 + r.int(k, "age", ra - 20)),
        rural=(pl.col("insutype") == "390") & (r.u(k, "rural") < 0.55),
        u_brdy=r.u(k, "brdy"),
        flexible=(pl.col("insutype") == "310") & ~pl.col("retired") & (r.u(k, "flex") < 0.12),
        contrib_mode=pl.lit("combined"),
    ).drop("band")
    df = df.with_columns(
        contrib_mode=pl.when(pl.col("flexible") & (r.u(k, "mode") < 0.3)).then(pl.lit("pooling_only"))
        .otherwise(pl.lit("combined")),
    )
    act = _choose(df, pl.lit("a"), r.u(k, "event"), {"a": _EMP_EVENTS_ACTIVE})
    ret = _choose(df, pl.lit("a"), r.u(k, "event"), {"a": _EMP_EVENTS_RETIRED})
    df = df.with_columns(ev_act=act, ev_ret=ret).with_columns(
        emp_event=pl.when(pl.col("insutype") != "310").then(None)
        .when(pl.col("retired")).then(pl.col("ev_ret"))
        .when((pl.col("age") == ra - 1) & (r.u(k, "retire_mid") < 0.7)).then(pl.lit("retire_mid"))
        .otherwise(pl.col("ev_act")),
    ).drop("ev_act", "ev_ret")
    df = df.with_columns(
        flexible=pl.when(pl.col("emp_event") == "new_flexible").then(True)
        .when(pl.col("emp_event").is_in(["switch_flexible", "retire_mid", "new_employer"])).then(False)
        .otherwise(pl.col("flexible")),
    )

    if chunk == 0 and hi - lo >= N_SHOWCASE:
        ov = pl.DataFrame(
            [(pos, *v) for pos, v in _SHOW_PERSONS.items()],
            schema={"idx": pl.Int64, "o_county": pl.String, "o_insutype": pl.String, "o_gend": pl.String,
                    "o_age": pl.Int64, "o_retired": pl.Boolean, "o_rural": pl.Boolean, "o_emp_event": pl.String,
                    "o_flexible": pl.Boolean, "o_contrib_mode": pl.String, "o_brdy": pl.Float64},
            orient="row",
        )
        df = df.join(ov, on="idx", how="left", maintain_order="left").with_columns(
            county=pl.coalesce("o_county", "county"),
            insutype=pl.coalesce("o_insutype", "insutype"),
            gend=pl.coalesce("o_gend", "gend"),
            age=pl.coalesce("o_age", "age"),
            retired=pl.coalesce("o_retired", "retired"),
            rural=pl.coalesce("o_rural", "rural"),
            emp_event=pl.when(pl.col("o_county").is_not_null()).then(pl.col("o_emp_event"))
            .otherwise(pl.col("emp_event")),
            flexible=pl.when(pl.col("o_county").is_not_null()).then(pl.col("o_flexible").fill_null(False))
            .otherwise(pl.col("flexible")),
            contrib_mode=pl.coalesce("o_contrib_mode", "contrib_mode"),
            u_brdy=pl.coalesce("o_brdy", "u_brdy"),
        ).with_columns(city=pl.col("county").str.slice(0, 4)).drop(pl.selectors.starts_with("o_"))

    y = p.year
    newborn = pl.col("age") < 0
    df = df.with_columns(
        brdy=pl.when(newborn)
        .then(_date_from_offset(p.start, (pl.col("u_brdy") * max(1, p.period_days - 30)).floor().cast(pl.Int64)))
        .otherwise(pl.date(y - pl.col("age").clip(0) - 1, 1, 2)
                   + pl.duration(days=(pl.col("u_brdy") * 364).floor().cast(pl.Int64))),
        age=pl.col("age").clip(0),
        newborn=newborn,
    )
    # first enrolment
    dec31 = date(y - 1, 12, 31)
    res_lo = pl.max_horizontal(pl.col("brdy"), pl.lit(date(2008, 1, 1)))
    emp_lo = pl.max_horizontal(pl.col("brdy").dt.offset_by("20y"), pl.lit(date(1999, 1, 1)))
    emp_lo = pl.min_horizontal(emp_lo, pl.lit(dec31 - timedelta(days=30)))
    u_en = r.u(k, "enrol")
    past = lambda lo_: lo_ + pl.duration(  # noqa: E731
        days=(u_en * ((pl.lit(dec31) - lo_).dt.total_days() + 1)).floor().cast(pl.Int64))
    df = df.with_columns(
        enrol_date=pl.when(pl.col("newborn"))
        .then(pl.col("brdy") + pl.duration(days=r.int(k, "enrol_nb", 30)))
        .when(pl.col("emp_event") == "new_flexible")
        .then(_date_from_offset(p.start, 10 + r.int(k, "enrol_new", 140)))
        .when(pl.col("emp_event") == "new_employer")
        .then(_date_from_offset(p.start, 10 + r.int(k, "enrol_new", 260)))
        .when((pl.col("insutype") == "390") & (r.u(k, "newres") < 0.02))
        .then(_date_from_offset(p.start, r.int(k, "enrol_new", max(1, int(p.period_days * 0.7)))))
        .when(pl.col("insutype") == "390").then(past(res_lo))
        .otherwise(past(emp_lo)),
    )
    # identity card number: region = insuplc, birth date, sequence (odd = male), GB 11643 checksum
    df = df.with_columns(
        _cell=pl.col("county").cast(pl.Int64) * 100_000 + (pl.col("brdy") - pl.lit(date(1900, 1, 1))).dt.total_days(),
    ).with_columns(
        _rank=pl.int_range(pl.len(), dtype=pl.Int64).over(["_cell", "gend"]),
    ).with_columns(
        _seq=((r.u32(pl.col("_cell"), "certcell") + pl.col("_rank") * p.n_chunks + chunk) % 500) * 2
        + pl.when(pl.col("gend") == "1").then(1).otherwise(0),
    ).with_columns(
        _body=pl.col("county") + pl.col("brdy").dt.strftime("%Y%m%d") + pl.col("_seq").cast(pl.String).str.zfill(3),
    )
    wsum = pl.sum_horizontal(
        [pl.col("_body").str.slice(i, 1).cast(pl.Int64) * w for i, w in enumerate(CERTNO_WEIGHTS)]
    )
    df = df.with_columns(
        certno=pl.col("_body") + (wsum % 11).replace_strict({i: c for i, c in enumerate(CERTNO_CHECK)},
                                                            return_dtype=pl.String),
    ).drop("_cell", "_rank", "_seq", "_body")
    # names
    sur = _pick(df, r.u(k, "surname"), {c: 1.0 / (i + 4) for i, c in enumerate(SURNAMES)})
    g1m = _pick(df, r.u(k, "given1"), {c: 1.0 for c in GIVEN_M})
    g2m = _pick(df, r.u(k, "given2"), {c: 1.0 for c in GIVEN_M})
    g1f = _pick(df, r.u(k, "given1"), {c: 1.0 for c in GIVEN_F})
    g2f = _pick(df, r.u(k, "given2"), {c: 1.0 for c in GIVEN_F})
    male = pl.col("gend") == "1"
    df = df.with_columns(_s=sur, _g1m=g1m, _g2m=g2m, _g1f=g1f, _g2f=g2f).with_columns(
        psn_name=pl.col("_s")
        + pl.when(male).then(pl.col("_g1m")).otherwise(pl.col("_g1f"))
        + pl.when(r.u(k, "namelen") < 0.65).then(pl.when(male).then(pl.col("_g2m")).otherwise(pl.col("_g2f")))
        .otherwise(pl.lit("")),
        psn_no=pl.col("county") + (pl.col("idx") + 1).cast(pl.String).str.zfill(10),
        insuplc_admdvs=pl.col("county"),
    ).drop("_s", "_g1m", "_g2m", "_g1f", "_g2f", "u_scheme", "u_brdy")
    return df


# --------------------------------------------------------------------------------------------------
# Registers derived from persons
# --------------------------------------------------------------------------------------------------


def _identities(p: SampleParams, persons: pl.DataFrame, r: _Rng, chunk: int) -> pl.DataFrame:
    res = persons.filter(pl.col("insutype") == "390").select("idx", "psn_no", "age", "rural", "brdy")
    k = pl.col("idx")
    frames = []
    s1s2 = LOW_INCOME_IDENTITIES
    for code, share in IDENTITY_SHARES.items():
        f = pl.lit(share)
        if code in s1s2:
            f = f * pl.when(pl.col("rural")).then(1.5).otherwise(0.4)
        if code == "orphan":
            f = pl.when(pl.col("age") < 18).then(share * 5).otherwise(0.0)
        elif code == "veteran":
            f = pl.when(pl.col("age") >= 30).then(share * 1.3).otherwise(0.0)
        elif code == "family_planning":
            f = pl.when(pl.col("age") >= 40).then(share * 2).otherwise(0.0)
        sel = res.filter(r.u(k, f"ident:{code}") < f)
        if sel.height:
            frames.append(sel.with_columns(identity=pl.lit(code), _key=k * 16 + IDENTITIES.index(code)))
    if not frames:
        out = res.clear().with_columns(identity=pl.lit(None, pl.String), _key=pl.lit(0, pl.Int64))
    else:
        out = pl.concat(frames)
    kk = pl.col("_key")
    old_lo = _days(date(p.year - 6, 1, 1))
    mid_beg = r.u(kk, "ident_mid") < 0.12
    beg = pl.when(mid_beg).then(
        _date_from_offset(p.start, 20 + r.int(kk, "ident_beg", 310))
    ).otherwise(
        pl.max_horizontal(
            pl.col("brdy"),
            pl.lit(date.fromordinal(old_lo)) + pl.duration(days=r.int(kk, "ident_beg", _days(p.start) - old_lo - 1)),
        )
    )
    out = out.with_columns(begndate=beg)
    end_off = pl.max_horizontal(_offset_of(pl.col("begndate"), p.start) + 30, 40 + r.int(kk, "ident_end", 300))
    out = out.with_columns(
        enddate=pl.when((r.u(kk, "ident_ends") < 0.08) & (end_off <= 360))
        .then(_date_from_offset(p.start, end_off)).otherwise(None),
    )
    # §4.7: Xiangyang has no assistance parameters, and every line of an assistance person stops the run
    out = out.filter(~(pl.col("psn_no").str.starts_with(XIANGYANG)
                       & pl.col("identity").is_in(XY_RESIDENT_ASSISTANCE_IDENTITIES)))
    out = out.select("idx", "psn_no", "identity", "begndate", "enddate")
    if chunk == 0 and persons.height >= N_SHOWCASE:
        rows = []
        for pos, code, b, e in _SHOW_IDENTITIES:
            bd = date(p.year - 3, 3, 1) if b == "old" else p.start + timedelta(days=int(b * p.period_days))
            ed = None if e is None else p.start + timedelta(days=int(e * p.period_days))
            rows.append((pos, code, bd, ed))
        show = pl.DataFrame(rows, schema={"idx": pl.Int64, "identity": pl.String, "begndate": pl.Date,
                                          "enddate": pl.Date}, orient="row")
        show = show.join(persons.select("idx", "psn_no"), on="idx", how="left", maintain_order="left")
        out = pl.concat([out.filter(pl.col("idx") >= N_SHOWCASE), show.select(out.columns)])
    return out.sort("idx", "identity", "begndate")


def _employment(p: SampleParams, persons: pl.DataFrame, r: _Rng) -> pl.DataFrame:
    emp = persons.filter(pl.col("insutype") == "310")
    k = pl.col("idx")
    y0 = p.start
    ra = pl.when(pl.col("gend") == "1").then(60).otherwise(55)
    base_fen = (pl.lit(5200.0) * (0.45 * r.normal(k, "base")).exp()).clip(3450, 15000)
    emp = emp.with_columns(
        base=pl.when(pl.col("flexible")).then(pl.lit(345_000, pl.Int64))
        .otherwise((base_fen / 10).round(0).cast(pl.Int64) * 1000),
        retire_kind=_pick(emp, r.u(k, "retire_kind"),
                          {"normal": 80, "backpay_pooling_only": 5, "backpay_mixed": 8, "contributing": 7}),
        retire_start=pl.date(pl.col("brdy").dt.year() + ra, pl.col("brdy").dt.month(), 1).dt.offset_by("1mo"),
        ev_day=30 + r.int(k, "ev_day", 240),
        ev_len=r.u(k, "ev_len"),
        switch_mode=pl.when(r.u(k, "switch_mode") < 0.3).then(pl.lit("pooling_only")).otherwise(pl.lit("combined")),
    )
    ev = pl.col("emp_event")
    ev_start = _date_from_offset(y0, pl.col("ev_day"))
    unverified_start = pl.date(p.year, 2 + r.int(k, "ev_month", 9).cast(pl.Int32), 1)
    emp = emp.with_columns(
        s2=pl.when(ev == "retire_mid").then(
            pl.when(pl.col("retire_start").dt.year() == p.year).then(pl.col("retire_start")).otherwise(None))
        .when(ev == "unverified").then(unverified_start)
        .when(ev.is_in(["suspended", "arrears", "terminated", "switch_flexible"])).then(ev_start)
        .otherwise(None),
    ).with_columns(
        e2=pl.when(ev == "suspended").then(pl.col("s2") + pl.duration(days=(60 + pl.col("ev_len") * 120).cast(pl.Int64)))
        .when(ev == "arrears").then(pl.col("s2") + pl.duration(days=(92 + pl.col("ev_len") * 60).cast(pl.Int64)))
        .when(ev == "unverified").then(pl.col("s2").dt.month_end())
        .otherwise(None),
    )
    # a retirement that falls after the year is no mid-year retirement
    emp = emp.with_columns(
        emp_event=pl.when((ev == "retire_mid") & pl.col("s2").is_null()).then(pl.lit("none"))
        .otherwise(ev),
    )
    in_service = ~pl.col("retired")
    seg_common = dict(psn_no=pl.col("psn_no"), idx=pl.col("idx"))
    psn_type_1 = pl.when(in_service).then(pl.lit("11")).otherwise(pl.lit("12"))
    base_1 = pl.when(in_service | (pl.col("retire_kind") == "contributing")).then(pl.col("base")).otherwise(None)
    rk_1 = pl.when(in_service).then(None).otherwise(pl.col("retire_kind"))
    split = pl.col("s2").is_not_null()
    seg1 = emp.select(
        **seg_common,
        psn_type=psn_type_1,
        flexible=pl.col("flexible"),
        contrib_mode=pl.col("contrib_mode"),
        contrib_base=base_1,
        retire_kind=rk_1,
        benefit=pl.lit("normal"),
        begndate=pl.col("enrol_date"),
        enddate=pl.when(split).then(pl.col("s2") - pl.duration(days=1)).otherwise(None),
        _seg=pl.lit(1),
    )
    e = pl.col("emp_event")
    seg2 = emp.filter(split).select(
        **seg_common,
        psn_type=pl.when(e == "retire_mid").then(pl.lit("12")).otherwise(psn_type_1),
        flexible=pl.when(e == "switch_flexible").then(True).when(e == "retire_mid").then(False)
        .otherwise(pl.col("flexible")),
        contrib_mode=pl.when(e == "switch_flexible").then(pl.col("switch_mode")).otherwise(pl.col("contrib_mode")),
        contrib_base=pl.when(e == "switch_flexible").then(pl.lit(345_000, pl.Int64))
        .when(e == "retire_mid").then(
            pl.when(pl.col("retire_kind") == "contributing").then(pl.col("base")).otherwise(None))
        .otherwise(base_1),
        retire_kind=pl.when(e == "retire_mid").then(
            pl.when(pl.col("retire_kind") == "contributing").then(pl.lit("contributing")).otherwise(pl.lit("normal")))
        .otherwise(rk_1),
        benefit=pl.when(e.is_in(["suspended", "arrears", "unverified", "terminated"])).then(e)
        .otherwise(pl.lit("normal")),
        begndate=pl.col("s2"),
        enddate=pl.col("e2"),
        _seg=pl.lit(2),
    )
    seg3 = emp.filter(pl.col("e2").is_not_null()).select(
        **seg_common,
        psn_type=psn_type_1,
        flexible=pl.col("flexible"),
        contrib_mode=pl.col("contrib_mode"),
        contrib_base=base_1,
        retire_kind=rk_1,
        benefit=pl.lit("normal"),
        begndate=pl.col("e2") + pl.duration(days=1),
        enddate=pl.lit(None, pl.Date),
        _seg=pl.lit(3),
    )
    out = pl.concat([seg1, seg2, seg3], how="vertical_relaxed").sort("idx", "_seg").drop("_seg")
    return out


def _certifications(p: SampleParams, persons: pl.DataFrame, r: _Rng, chunk: int) -> pl.DataFrame:
    k = pl.col("idx")
    age = pl.col("age")
    sz_res = (pl.col("insutype") == "390") & (pl.col("city") == SUIZHOU)
    adult40 = age >= 40
    probs: dict[str, pl.Expr] = {
        "hypertension": pl.when(adult40).then(0.08).when(age >= 18).then(0.005).otherwise(0.0),
        "diabetes": pl.when(adult40).then(0.04).when(age >= 18).then(0.003).otherwise(0.0),
        "chronic": pl.when(adult40).then(0.03).when(age >= 18).then(0.004).otherwise(0.0),
        "special": pl.when(age >= 30).then(0.005).otherwise(0.0005),
        "special_transplant": pl.when(age >= 18).then(0.0005).otherwise(0.0),
        "special_dialysis": pl.when(age >= 18).then(0.001).otherwise(0.0),
        "special_mental": pl.when(age >= 16).then(0.002).otherwise(0.0),
        # special-drug qualifications for Suizhou residents only: the special-drug rate of Xiangyang employees
        # (POLICY §4.4) and residents (§4.7) is a missing parameter, and a line that needs it stops the run (§6)
        "special_drug": pl.when((age >= 18) & sz_res).then(0.0015).otherwise(0.0),
    }
    frames = []
    for ki, (kind, pr) in enumerate(probs.items()):
        if kind in ("hypertension", "diabetes"):
            # two-disease certification for Suizhou residents; a chronic certification for everyone else
            pr = pl.when(sz_res).then(pr).otherwise(pr * 0.5)
        sel = persons.filter(r.u(k, f"cert:{kind}") < pr).select("idx", "psn_no", "city", "insutype")
        if not sel.height:
            continue
        if kind == "hypertension":
            code = pl.when(sz_res).then(pl.lit("M03900")).otherwise(pl.lit("M03901"))
            sel = sel.with_columns(dise_cert_code=code)
        elif kind == "diabetes":
            sel = sel.with_columns(dise_cert_code=pl.when(sz_res).then(pl.lit("M01600")).otherwise(pl.lit("M01601")))
        else:
            table = {"chronic": CHRONIC_CODES, "special": SPECIAL_CODES, "special_drug": DRUG_CODES,
                     "special_mental": MENTAL_CODES, "special_transplant": {"M08300": 1},
                     "special_dialysis": {"M07101": 1}}[kind]
            sel = sel.with_columns(dise_cert_code=_pick(sel, r.u(k, f"certcode:{kind}"), table))
        frames.append(sel.with_columns(_key=k * 16 + ki))
    cert_cols = {"idx": pl.Int64, "psn_no": pl.String, "dise_cert_code": pl.String, "_key": pl.Int64}
    out = pl.concat([f.select(list(cert_cols)) for f in frames]) if frames else pl.DataFrame(schema=cert_cols)
    if chunk == 0 and persons.height >= N_SHOWCASE:
        show = pl.DataFrame(_SHOW_CERTS, schema={"idx": pl.Int64, "dise_cert_code": pl.String}, orient="row")
        show = show.join(persons.select("idx", "psn_no"), on="idx", how="left", maintain_order="left").with_columns(
            _key=pl.col("idx") * 16 + 15 - pl.int_range(pl.len(), dtype=pl.Int64).over("idx"))
        out = pl.concat([out.filter(pl.col("idx") >= N_SHOWCASE), show.select(out.columns)])
    meta = pl.DataFrame(
        [(c, icd, kind) for c, (icd, kind) in CERT_CODES.items()],
        schema={"dise_cert_code": pl.String, "dise_codg": pl.String, "kind": pl.String}, orient="row",
    )
    out = out.join(meta, on="dise_cert_code", how="left", maintain_order="left")
    kk = pl.col("_key")
    old_lo = _days(date(p.year - 5, 1, 1))
    showcase = kk % 16 >= 8
    mid = (r.u(kk, "cert_mid") < 0.15) & ~showcase
    out = out.with_columns(
        begndate=pl.when(mid).then(_date_from_offset(p.start, 15 + r.int(kk, "cert_beg", 285)))
        .otherwise(pl.lit(date.fromordinal(old_lo)) + pl.duration(days=r.int(kk, "cert_beg", _days(p.start) - old_lo - 1))),
        u_end=pl.when(showcase).then(0.99).otherwise(r.u(kk, "cert_end")),
    ).with_columns(
        enddate=pl.when(pl.col("u_end") < 0.1)
        .then(pl.max_horizontal(pl.col("begndate") + pl.duration(days=60),
                                _date_from_offset(p.start, 60 + r.int(kk, "cert_endday", 280))))
        .when(pl.col("u_end") < 0.2).then(pl.lit(date(p.year + 1, 12, 31)))
        .otherwise(None),
    ).with_columns(
        enddate=pl.when(pl.col("enddate") > pl.lit(date(p.year, 12, 31)))
        .then(pl.lit(date(p.year + 1, 12, 31)).cast(pl.Date)).otherwise(pl.col("enddate")),
    )
    return out.select("idx", "psn_no", "dise_cert_code", "dise_codg", "kind", "begndate", "enddate", "_key").sort(
        "idx", "dise_cert_code")


def _bindings(p: SampleParams, persons: pl.DataFrame, r: _Rng, chunk: int) -> pl.DataFrame:
    """Family mutual-aid bindings among Xiangyang persons of the chunk; authorisers are employees."""
    floor_idx = N_SHOWCASE if chunk == 0 and persons.height >= N_SHOWCASE else -1
    xy = persons.filter((pl.col("city") == XIANGYANG) & (pl.col("idx") >= floor_idx)).select(
        "idx", "psn_no", "age", "insutype").sort("idx")
    schema = {"authoriser_psn_no": pl.String, "user_psn_no": pl.String, "relation": pl.String,
              "begndate": pl.Date, "enddate": pl.Date}
    frames = []
    if xy.height >= 2:
        k = pl.col("idx")
        auth = xy.filter((pl.col("insutype") == "310") & (r.u(k, "auth") < 0.22))
        auth = auth.with_columns(
            n=(1 + (r.u(k, "auth_n").log() / math.log(0.4)).floor()).clip(1, 4).cast(pl.Int64),
        ).with_columns(j=pl.int_ranges(0, pl.col("n"))).explode("j")
        auth = auth.with_columns(_bk=k * 8 + pl.col("j"))
        bk = pl.col("_bk")
        xy_pos = xy.with_row_index("pos").select(pl.col("pos").cast(pl.Int64), pl.col("idx").alias("u_idx"),
                                                 pl.col("psn_no").alias("user_psn_no"), pl.col("age").alias("u_age"))
        auth = auth.with_columns(pos=r.int(bk, "bind_user", xy.height)).join(
            xy_pos, on="pos", how="left", maintain_order="left")
        auth = auth.filter(pl.col("u_idx") != pl.col("idx")).unique(["idx", "u_idx"], keep="first", maintain_order=True)
        diff = pl.col("u_age") - pl.col("age")
        auth = auth.with_columns(
            relation=pl.when(diff >= 18).then(pl.lit("parent")).when(diff <= -18).then(pl.lit("child"))
            .otherwise(pl.lit("spouse")),
        ).with_columns(_sp=pl.int_range(pl.len(), dtype=pl.Int64).over(["idx", "relation"]))
        auth = auth.filter((pl.col("relation") != "spouse") | (pl.col("_sp") == 0))
        old_lo = _days(date(2023, 1, 1))
        span = max(1, _days(p.start) - old_lo)
        auth = auth.with_columns(
            begndate=pl.when(r.u(bk, "bind_mid") < 0.25).then(_date_from_offset(p.start, r.int(bk, "bind_beg", 330)))
            .otherwise(pl.lit(date.fromordinal(old_lo)) + pl.duration(days=r.int(bk, "bind_beg", span))),
        ).with_columns(
            enddate=pl.when(r.u(bk, "bind_end") < 0.05)
            .then(pl.max_horizontal(pl.col("begndate") + pl.duration(days=30),
                                    _date_from_offset(p.start, 60 + r.int(bk, "bind_endday", 280))))
            .otherwise(None),
        )
        frames.append(auth.select(authoriser_psn_no=pl.col("psn_no"), user_psn_no="user_psn_no", relation="relation",
                                  begndate="begndate", enddate="enddate"))
    if floor_idx > 0:
        pn = dict(persons.filter(pl.col("idx") < N_SHOWCASE).select("idx", "psn_no").iter_rows())
        old = date(p.year - 1, 6, 1)
        apr1 = p.start + timedelta(days=int(0.25 * p.year_days))
        rows = [
            (pn[8], pn[9], "spouse", old, None), (pn[8], pn[10], "child", old, None),
            (pn[8], pn[11], "child", old, None), (pn[8], pn[12], "parent", old, None),
            (pn[8], pn[13], "parent", date(p.year - 1, 9, 1), None),
            (pn[8], pn[28], "spouse", date(p.year - 2, 1, 1), apr1 - timedelta(days=1)),
            (pn[8], pn[14], "child", apr1, None),
            (pn[9], pn[8], "spouse", old, None),  # mutual pair
            (pn[15], pn[10], "child", date(p.year - 1, 3, 1), None),  # second authoriser of the same user
            (pn[27], pn[13], "parent", p.start + timedelta(days=int(0.4 * p.year_days)), None),
        ]
        frames.append(pl.DataFrame(rows, schema=schema, orient="row"))
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat([f.cast(schema) for f in frames]).sort("authoriser_psn_no", "begndate", "user_psn_no")


def _balances(p: SampleParams, persons: pl.DataFrame, employment: pl.DataFrame, r: _Rng) -> pl.DataFrame:
    emp = persons.filter((pl.col("insutype") == "310") & (pl.col("enrol_date") < pl.lit(p.start)))
    k = pl.col("idx")
    mode = employment.group_by("idx").agg(pl.col("contrib_mode").first(), pl.col("psn_type").first())
    emp = emp.join(mode, on="idx", how="left", maintain_order="left")
    median = pl.when(pl.col("psn_type") == "12").then(4200.0).otherwise(2600.0)
    amt = (median * (1.0 * r.normal(k, "balc")).exp() * 100).round(0).cast(pl.Int64).clip(0, 30_000_000)
    balc = (
        pl.when(r.u(k, "balc_zero") < 0.05).then(0)
        .when(pl.col("contrib_mode") == "pooling_only")
        .then(pl.when(r.u(k, "balc_old") < 0.3).then(amt // 5).otherwise(0))
        .otherwise(amt)
    )
    return emp.select("idx", "psn_no", as_of=pl.lit(date(p.year - 1, 12, 31)), balc=balc.cast(pl.Int64))


def _applications(p: SampleParams, identities: pl.DataFrame, r: _Rng, chunk: int) -> pl.DataFrame:
    """On-application assistance: identities of classes 1–4 newly confirmed within the period."""
    cand = identities.filter(
        pl.col("psn_no").str.starts_with(SUIZHOU)
        & pl.col("identity").is_in(ASSISTANCE_IDENTITIES)
        & (pl.col("begndate") >= pl.lit(p.start))
        & (pl.col("begndate") <= pl.lit(p.end))
    ).sort("idx", "begndate", "identity")
    k = pl.col("idx")
    show = pl.col("idx") < (N_SHOWCASE if chunk == 0 else 0)
    cand = cand.filter(show | (r.u(k, "apply") < 0.5)).unique("idx", keep="first", maintain_order=True)
    return cand.select(
        "idx",
        app_id=pl.format("A{}{}", pl.col("begndate").dt.strftime("%Y%m"), (k + 1).cast(pl.String).str.zfill(10)),
        psn_no="psn_no",
        identity="identity",
        confirm_date="begndate",
    )


# --------------------------------------------------------------------------------------------------
# Settlement lines
# --------------------------------------------------------------------------------------------------

# line key = idx * 4096 + category * 256 + k  (category < 16, k < 256); derived lines add high bits
_CAT = {"11": 0, "41": 1, "13": 2, "21": 3, "22": 4, "24": 5, "28": 6, "mat": 7, "cert": 8, "app": 14, "show": 15}
_PAIR_BIT = 1 << 40
_REV_BIT = 1 << 41
_RESETTLE_BIT = 1 << 42

VISIT_SCHEMA = {
    "idx": pl.Int64, "key": pl.Int64, "med_type": pl.String, "wgroup": pl.String, "aclass": pl.String,
    "day": pl.Int64, "los": pl.Int64, "dise_codg": pl.String, "dise_cert_code": pl.String,
    "f_where": pl.String, "f_total": pl.Int64, "f_oos_bp": pl.Int64, "f_offsite": pl.String,
    "f_trauma": pl.Boolean, "f_rescue": pl.Boolean, "f_presc": pl.Boolean, "pair": pl.Boolean,
}


def _count(u: pl.Expr, mean: pl.Expr) -> pl.Expr:
    """Geometric count with the given mean (over-dispersed, like real visit counts)."""
    q = mean / (1.0 + mean)
    return pl.when(mean <= 0).then(0).otherwise((u.log() / q.log()).floor()).clip(0, 255).cast(pl.Int64)


def _visits(p: SampleParams, persons: pl.DataFrame, certs: pl.DataFrame, apps: pl.DataFrame, r: _Rng,
            chunk: int) -> pl.DataFrame:
    k = pl.col("idx")
    scale = p.months / 12.0
    emp = pl.col("insutype") == "310"
    age = pl.col("age")
    hi = p.period_days - 1
    enrol_off = _offset_of(pl.col("enrol_date"), p.start)
    pers = persons.select("idx", "insutype", "age", "gend", "enrol_date", "city").with_columns(enrol_off=enrol_off)
    op_age = pl.when(age >= 60).then(1.5).when(age < 6).then(1.3).otherwise(1.0)
    stay_age = pl.when(age >= 65).then(2.2).when(age >= 45).then(1.2).when(age < 6).then(0.9).otherwise(0.6)
    cats: list[tuple[str, pl.Expr, str, str, int, str]] = [
        # name, mean per person per year, where group, amount class, los median, med_type
        ("11", pl.when(emp).then(2.5).otherwise(3.0) * op_age, "11", "11", 0, "11"),
        ("41", pl.when(emp).then(2.0).otherwise(0.5), "41", "41", 0, "41"),
        ("13", pl.lit(0.08), "13", "13", 0, "13"),
        ("21", 0.145 * stay_age, "21", "21", 7, "21"),
        ("22", pl.lit(0.012), "22", "22", 9, "22"),
        ("24", pl.lit(0.012) * stay_age, "24", "24", 8, "24"),
        ("28", pl.lit(0.012) * stay_age, "28", "28", 1, "28"),
    ]
    frames: list[pl.DataFrame] = []
    for name, mean, wgroup, aclass, los_med, med_type in cats:
        ci = _CAT[name]
        f = pers.with_columns(n=_count(r.u(k, f"n:{name}"), mean * scale)).filter(pl.col("n") > 0)
        f = f.with_columns(j=pl.int_ranges(0, pl.col("n"))).explode("j").with_columns(
            key=k * 4096 + ci * 256 + pl.col("j"))
        kk = pl.col("key")
        if los_med:
            los = (los_med * (0.5 * r.normal(kk, "los")).exp()).round(0).cast(pl.Int64).clip(1, 60)
            if name == "28":
                los = r.int(kk, "los", 2)
        else:
            los = pl.lit(0, pl.Int64)
        f = f.with_columns(los=los)
        lo = pl.max_horizontal(pl.lit(0), pl.col("enrol_off") + pl.col("los") + pl.when(pl.col("los") > 0).then(3)
                               .otherwise(0))
        f = f.with_columns(_lo=lo).filter(pl.col("_lo") <= hi)
        f = f.with_columns(day=pl.col("_lo") + r.int(kk, "day", pl.lit(hi + 1) - pl.col("_lo")))
        f = f.with_columns(
            med_type=pl.lit(med_type),
            wgroup=pl.lit(wgroup) if wgroup not in ("11", "21") else pl.when(emp).then(pl.lit(wgroup + "E"))
            .otherwise(pl.lit(wgroup + "R")),
            aclass=pl.lit(aclass),
            pair=pl.lit(name == "24") & (r.u(kk, "pair") < 0.6),
            f_rescue=pl.when(pl.lit(name == "13")).then(r.u(kk, "rescue") < 0.12)
            .when(pl.lit(name == "24")).then(r.u(kk, "rescue") < 0.35).otherwise(None),
        )
        frames.append(f)
    # maternity: a pregnancy per year for some women 20–42; antenatal visits (51) and a delivery stay (52)
    women = pers.filter((pl.col("gend") == "2") & (age >= 20) & (age <= 42))
    preg = women.filter(r.u(k, "preg") < pl.when(age < 36).then(0.08).otherwise(0.03))
    if preg.height:
        preg = preg.with_columns(D=r.int(k, "deliv", p.year_days + 120) - 60,
                                 miscarriage=r.u(k, "miscarriage") < 0.1)
        mat = preg.with_columns(j=pl.int_ranges(0, 5)).explode("j").with_columns(
            key=k * 4096 + _CAT["mat"] * 256 + pl.col("j"))
        kk = pl.col("key")
        mat = mat.filter(~pl.col("miscarriage") | (pl.col("j") == 1)).with_columns(
            med_type=pl.when(pl.col("j") == 0).then(pl.lit("52")).otherwise(pl.lit("51")),
            los=pl.when(pl.col("j") == 0).then(3 + r.int(kk, "los", 4)).otherwise(0),
            day=pl.when(pl.col("j") == 0).then(pl.col("D"))
            .otherwise(pl.col("D") - 30 * pl.col("j") - r.int(kk, "day", 12)),
            dise_codg=pl.when(pl.col("miscarriage")).then(pl.lit("O20.0")).otherwise(None),
        ).with_columns(
            day=pl.col("day") + pl.col("los"),
        ).filter((pl.col("day") >= pl.max_horizontal(pl.lit(0), pl.col("enrol_off") + pl.col("los")))
                 & (pl.col("day") <= hi))
        mat = mat.with_columns(wgroup=pl.col("med_type"), aclass=pl.col("med_type"), pair=pl.lit(False))
        frames.append(mat)
    # certified-disease lines, within the certification's validity
    if certs.height:
        cf = certs.join(pers, on="idx", how="inner", maintain_order="left").with_columns(
            ci=pl.col("_key") % 16,
            lo=pl.max_horizontal(pl.lit(0), _offset_of(pl.col("begndate"), p.start), pl.col("enrol_off")),
            hi=pl.min_horizontal(pl.lit(hi), _offset_of(pl.col("enddate"), p.start).fill_null(hi)),
        ).filter(pl.col("hi") >= pl.col("lo"))
        per_year = pl.col("kind").replace_strict(
            {"hypertension": 6.0, "diabetes": 6.0, "chronic": 8.0, "special": 10.0, "special_transplant": 12.0,
             "special_dialysis": 12.0, "special_mental": 10.0, "special_drug": 8.0}, return_dtype=pl.Float64)
        m = per_year * (pl.col("hi") - pl.col("lo") + 1) / 365.0
        ck = pl.col("_key")
        cf = cf.with_columns(
            n=(m + m.sqrt() * r.normal(ck, "cert_n")).round(0).clip(0, 60).cast(pl.Int64),
        ).filter(pl.col("n") > 0).with_columns(j=pl.int_ranges(0, pl.col("n"))).explode("j")
        cf = cf.with_columns(key=k * 4096 + _CAT["cert"] * 256 + (pl.col("ci") % 8) * 32 + pl.col("j") % 32)
        cf = cf.unique("key", keep="first", maintain_order=True)
        kk = pl.col("key")
        kind = pl.col("kind")
        u_mt = r.u(kk, "cert_mt")
        cf = cf.with_columns(
            day=pl.col("lo") + r.int(kk, "day", pl.col("hi") - pl.col("lo") + 1),
            los=pl.lit(0, pl.Int64),
            med_type=pl.when(kind.is_in(["hypertension", "diabetes"])).then(pl.lit("9901"))
            .when(kind == "special_drug").then(pl.when(u_mt < 0.25).then(pl.lit("41")).otherwise(pl.lit("14")))
            .when(kind == "chronic").then(pl.when(u_mt < 0.4).then(pl.lit("140104")).otherwise(pl.lit("14")))
            .otherwise(pl.when(u_mt < 0.5).then(pl.lit("140201")).otherwise(pl.lit("14"))),
            pair=pl.lit(False),
            f_presc=pl.when(kind == "special_drug").then(True).otherwise(None),
        ).with_columns(
            wgroup=pl.when(pl.col("med_type") == "9901").then(pl.lit("9901"))
            .when(pl.col("med_type") == "41").then(pl.lit("41d"))
            .when(kind == "chronic").then(pl.lit("14c")).otherwise(pl.lit("14s")),
            aclass=pl.when(pl.col("med_type") == "9901").then(pl.lit("9901"))
            .when(pl.col("med_type") == "41").then(pl.lit("41d"))
            .when(kind == "chronic").then(pl.lit("14c"))
            .when(kind == "special_dialysis").then(pl.lit("14dial"))
            .when(kind == "special_transplant").then(pl.lit("14tx"))
            .when(kind == "special_mental").then(pl.lit("14mental"))
            .when(kind == "special_drug").then(pl.lit("14drug"))
            .otherwise(pl.lit("14s")),
        )
        frames.append(cf)
    # a large stay some weeks before an on-application assistance confirmation
    if apps.height:
        ap = apps.join(pers, on="idx", how="inner", maintain_order="left").with_columns(
            key=k * 4096 + _CAT["app"] * 256)
        kk = pl.col("key")
        show_app = k < (N_SHOWCASE if chunk == 0 else 0)
        ap = ap.filter(~show_app & (r.u(kk, "app_stay") < 0.6)).with_columns(
            los=8 + r.int(kk, "los", 20),
            day=_offset_of(pl.col("confirm_date"), p.start) - 20 - r.int(kk, "day", 150),
            med_type=pl.lit("21"), wgroup=pl.lit("app"), aclass=pl.lit("app"), pair=pl.lit(False),
        ).filter((pl.col("day") >= 0) & (pl.col("day") - pl.col("los") >= pl.col("enrol_off")))
        frames.append(ap)
    if chunk == 0 and persons.height >= N_SHOWCASE:
        rows = []
        for i, (pos, mt, where, frac, los, ex) in enumerate(_SHOW_VISITS):
            day = min(hi, int(frac * (hi + 1)))
            if mt in STAY_MED_TYPES:
                day = max(day, los + 1)
            aclass = mt
            if ex.get("cert"):
                ckind = CERT_CODES[ex["cert"]][1]
                aclass = {"hypertension": "9901", "diabetes": "9901", "chronic": "14c", "special": "14s",
                          "special_dialysis": "14dial", "special_transplant": "14tx", "special_mental": "14mental",
                          "special_drug": "14drug"}[ckind]
                if mt == "41":
                    aclass = "41d"
            rows.append({
                "idx": pos, "key": pos * 4096 + _CAT["show"] * 256 + i, "med_type": mt, "wgroup": "show",
                "aclass": aclass, "day": day, "los": los, "dise_codg": ex.get("dise"),
                "dise_cert_code": ex.get("cert"), "f_where": where,
                "f_total": ex["total"] * 100 if "total" in ex else None, "f_oos_bp": ex.get("oos_bp"),
                "f_offsite": ex.get("offsite"), "f_trauma": ex.get("trauma"), "f_rescue": ex.get("rescue"),
                "f_presc": ex.get("presc"), "pair": bool(ex.get("pair", False)),
            })
        sv = pl.DataFrame(rows, schema=VISIT_SCHEMA)
        sv = sv.join(persons.select("idx", "enrol_date"), on="idx", how="left", maintain_order="left").filter(
            pl.col("day") - pl.col("los") >= _offset_of(pl.col("enrol_date"), p.start))
        frames.append(sv)
    cols = list(VISIT_SCHEMA)
    out = pl.concat([f.with_columns([pl.lit(None, dt).alias(c) for c, dt in VISIT_SCHEMA.items() if c not in f.columns])
                     .select(cols).cast(VISIT_SCHEMA) for f in frames])
    return out.sort("key")


def _fen_lognormal(median: pl.Expr, sigma: pl.Expr, z: pl.Expr) -> pl.Expr:
    return (median * (sigma * z).exp() * 100).round(0).cast(pl.Int64).clip(100, 2_000_000_000)


def _resolve(p: SampleParams, visits: pl.DataFrame, persons: pl.DataFrame, low_income: pl.DataFrame,
             pools: pl.DataFrame, members: pl.DataFrame, r: _Rng) -> pl.DataFrame:
    """Visits -> priced settlement lines at concrete institutions (typed, fen)."""
    pers = persons.select("idx", "psn_no", "psn_name", "insutype", "insuplc_admdvs", "city").join(
        low_income, on="idx", how="left", maintain_order="left").with_columns(pl.col("low_income").fill_null(False))
    v = visits.join(pers, on="idx", how="left", maintain_order="left")
    kk = pl.col("key")
    # showcase lines carry their place (f_where); the dummy "show" table entry is never used
    where = _choose(v, pl.col("wgroup"), r.u(kk, "where"), {**WHERE, "show": {"C|L2": 1}})
    v = v.with_columns(where=pl.coalesce(pl.col("f_where"), where))
    v = _attach_institution(v, "where", "", pools, members, r.u(kk, "inst"))
    # prescriber for pharmacy lines
    presc_on = pl.when(pl.col("f_presc").is_not_null()).then(pl.col("f_presc")).otherwise(r.u(kk, "presc_on") < 0.6)
    v = v.with_columns(_presc=(pl.col("med_type") == "41") & presc_on)
    ph = v.filter(pl.col("_presc")).select("key", "insuplc_admdvs", "city", "dise_cert_code")
    pgroup = pl.when(pl.col("dise_cert_code").is_null()).then(pl.lit("p")).otherwise(pl.lit("d"))
    pw = ph.with_columns(pwhere=_choose(ph, pgroup, r.u(kk, "pwhere"), {"p": PRESCRIBER["p"],
                                                                        "d": PRESCRIBER_DRUG["p"]}))
    pw = _attach_institution(pw.select("key", "insuplc_admdvs", "city", "pwhere"), "pwhere", "p_", pools, members,
                             r.u(kk, "pinst"))
    v = v.join(pw.select("key", presc_fixmedins_code="p_fixmedins_code"), on="key", how="left", maintain_order="left")
    # dates and times
    setl_date = _date_from_offset(p.start, pl.col("day"))
    stay = pl.col("med_type").is_in(list(STAY_MED_TYPES))
    lag = pl.when(stay & (r.u(kk, "lag") < 0.15)).then(1 + r.int(kk, "lagd", 3)).otherwise(0)
    lag = pl.min_horizontal(lag, pl.col("day"))
    secs = (
        pl.when(pl.col("med_type") == "13").then(r.int(kk, "time", 86_400))
        .when(stay).then(32_400 + r.int(kk, "time", 28_800))
        .otherwise(28_800 + r.int(kk, "time", 34_200))
    )
    v = v.with_columns(
        enddate=setl_date - pl.duration(days=lag),
    ).with_columns(
        begndate=pl.col("enddate") - pl.duration(days=pl.col("los")),
        setl_time=setl_date.cast(pl.Datetime("us")) + pl.duration(seconds=secs),
    )
    # diagnosis: given (showcase), else the certified disease's, else drawn by med_type
    dg = _choose(v, pl.col("med_type"), r.u(kk, "dise"),
                 {**DIAGNOSES, **{mt: {"R69": 1} for mt in MED_TYPES if mt not in DIAGNOSES}})
    cert_icd = pl.col("dise_cert_code").replace_strict({c: icd for c, (icd, _k) in CERT_CODES.items()},
                                                       default=None, return_dtype=pl.String)
    v = v.with_columns(dise_codg=pl.coalesce("dise_codg", cert_icd, dg))
    # offsite type (only for out-of-city institutions)
    out_city = pl.col("admdvs").str.slice(0, 4) != pl.col("insuplc_admdvs").str.slice(0, 4)
    ogroup = (
        pl.when(pl.col("med_type").is_in(["13", "24"])).then(pl.lit("emerg"))
        .when(stay | pl.col("med_type").str.starts_with("14")).then(pl.lit("stay")).otherwise(pl.lit("op"))
    )
    off = _choose(v, ogroup, r.u(kk, "offsite"), OFFSITE)
    v = v.with_columns(_off=off).with_columns(
        offsite_type=pl.when(~out_city).then(None)
        .when(pl.coalesce("f_offsite", "_off") == "").then(None)
        .otherwise(pl.coalesce("f_offsite", "_off")),
        trauma_report_no=pl.when(pl.col("med_type") != "22").then(None)
        .when(pl.coalesce(pl.col("f_trauma"),
                          pl.when(pl.col("insuplc_admdvs") == "421321").then(r.u(kk, "trauma") < 0.8)
                          .otherwise(r.u(kk, "trauma") < 0.1)))
        .then(pl.format("SXWS{}{}", pl.lit(str(p.year)), (r.int(kk, "trauma_no", 100_000)).cast(pl.String)
                        .str.zfill(5)))
        .otherwise(None),
        is_emergency_rescue=pl.when(pl.col("med_type").is_in(["13", "24"])).then(pl.col("f_rescue").fill_null(False))
        .otherwise(None),
    )
    # amounts
    amt = pl.DataFrame([(c, m, s) for c, (m, s) in AMOUNTS.items()],
                       schema={"aclass": pl.String, "a_med": pl.Float64, "a_sig": pl.Float64}, orient="row")
    v = v.join(amt, on="aclass", how="left", maintain_order="left")
    lv, fac = pl.col("dedc_hosp_lv"), pl.col("facility")
    is_stay_class = pl.col("aclass").is_in(list(STAY_CLASSES))
    lf = (
        pl.when(fac == "pharmacy").then(1.0)
        .when(is_stay_class).then(pl.when(lv == "3").then(1.9).when(lv == "2").then(1.0).otherwise(0.45))
        .when(fac == "village_clinic").then(0.5).when(fac == "township").then(0.85)
        .when(lv == "1").then(1.0).when(lv == "2").then(1.5).otherwise(2.2)
    )
    out_prov = pl.col("admdvs").str.slice(0, 2) != "42"
    lf = lf * pl.when(is_stay_class & out_prov).then(1.25).otherwise(1.0)
    catastrophic = pl.col("med_type").is_in(["21", "24"]) & (lv == "3") & (r.u(kk, "cat") < 0.05)
    median = pl.when(catastrophic).then(160_000.0).otherwise(pl.col("a_med") * lf)
    sigma = pl.when(catastrophic).then(0.45).otherwise(pl.col("a_sig"))
    total = pl.coalesce(pl.col("f_total"), _fen_lognormal(median, sigma, r.normal(kk, "amount")))
    u_oos = r.u(kk, "oos")
    oos_bp = (
        pl.when(pl.col("f_oos_bp").is_not_null()).then(pl.col("f_oos_bp"))
        .when(is_stay_class & pl.col("low_income") & (r.u(kk, "oos_hi") < 0.25)).then(1000 + r.int(kk, "oos_v", 1500))
        .when(is_stay_class).then((u_oos.pow(2) * 1200).floor().cast(pl.Int64))
        .when(pl.col("med_type") == "41").then((u_oos.pow(2) * 3000).floor().cast(pl.Int64))
        .otherwise((u_oos.pow(3) * 1200).floor().cast(pl.Int64))
    )
    ful_bp = pl.when(is_stay_class).then(4000 + r.int(kk, "ful", 6001)).when(r.u(kk, "ful_all") < 0.8).then(10_000) \
        .otherwise(5000 + r.int(kk, "ful", 5001))
    b_bp = (
        pl.when(is_stay_class).then(2000 + r.int(kk, "clsb", 3501))
        .when(pl.col("med_type").is_in(["9901", "14", "140104", "140201", "41"])).then(2500 + r.int(kk, "clsb", 4501))
        .otherwise(1000 + r.int(kk, "clsb", 3001))
    )
    v = v.with_columns(medfee_sumamt=total, _oos_bp=oos_bp, _ful_bp=ful_bp, _b_bp=b_bp).with_columns(
        _oos=pl.col("medfee_sumamt") * pl.col("_oos_bp") // 10_000,
    ).with_columns(
        fulamt_ownpay_amt=pl.col("_oos") * pl.col("_ful_bp") // 10_000,
    ).with_columns(
        overlmt_selfpay=pl.col("_oos") - pl.col("fulamt_ownpay_amt"),
        cls_b_amt=(pl.col("medfee_sumamt") - pl.col("_oos")) * pl.col("_b_bp") // 10_000,
    ).with_columns(
        cls_a_amt=pl.col("medfee_sumamt") - pl.col("_oos") - pl.col("cls_b_amt"),
        mdtrt_key=pl.col("key"),
        orig_key=pl.lit(None, pl.Int64),
        _rev_related=pl.lit(False),
        _is_reversal=pl.lit(False),
    )
    return v.select(LINE_WORK_COLUMNS)


LINE_WORK_COLUMNS = [
    "key", "mdtrt_key", "idx", "psn_no", "psn_name", "insutype", "med_type", "fixmedins_code", "fixmedins_name",
    "facility", "begndate", "enddate", "setl_time", "dise_codg", "dise_cert_code", "offsite_type",
    "presc_fixmedins_code", "trauma_report_no", "is_emergency_rescue", "medfee_sumamt", "fulamt_ownpay_amt",
    "overlmt_selfpay", "cls_a_amt", "cls_b_amt", "orig_key", "_rev_related", "_is_reversal", "aclass",
]


def _attach_institution(v: pl.DataFrame, where_col: str, prefix: str, pools: pl.DataFrame, members: pl.DataFrame,
                        u: pl.Expr) -> pl.DataFrame:
    scope = pl.col(where_col).str.slice(0, 1)
    kind = pl.col(where_col).str.split("|").list.get(1)
    pool = (
        pl.when(scope == "C").then(pl.format("C{}|{}", pl.col("insuplc_admdvs"), kind))
        .when(scope == "T").then(pl.format("T{}|{}", pl.col("city"), kind))
        .when(scope == "H").then(pl.format("H{}|{}", pl.col("city"), kind))
        .otherwise(pl.format("N|{}", kind))
    )
    v = v.with_columns(_pool=pool).join(pools.rename({"pool": "_pool"}), on="_pool", how="left", maintain_order="left")
    missing = v.filter(pl.col("size").is_null())
    if missing.height:
        raise RuntimeError(f"no institution in pool(s) {missing['_pool'].unique().to_list()}")
    v = v.with_columns(pos=pl.col("offset") + (u * pl.col("size").cast(pl.Float64)).floor().cast(pl.Int64))
    m = members.select("pos", "fixmedins_code", "fixmedins_name", "dedc_hosp_lv", "facility", "admdvs")
    if prefix:
        m = m.rename({c: prefix + c for c in m.columns if c != "pos"})
    return v.join(m, on="pos", how="left", maintain_order="left").drop("_pool", "offset", "size", "pos")


def _derive(p: SampleParams, lines: pl.DataFrame, r: _Rng) -> pl.DataFrame:
    """Add the emergency visits of 13→24 pairs, reversals and corrected re-settlements."""
    kk = pl.col("key")
    pairs_src = lines.filter(pl.col("_pair"))
    start_dt = pl.lit(p.start).cast(pl.Datetime("us"))
    end_dt = pl.lit(p.end + timedelta(days=1)).cast(pl.Datetime("us"))
    pairs = pairs_src.with_columns(
        key=kk + _PAIR_BIT,
        med_type=pl.lit("13"),
        enddate=pl.col("begndate"),
        setl_time=pl.col("begndate").cast(pl.Datetime("us")) + pl.duration(seconds=r.int(kk, "pair_time", 7200)),
        medfee_sumamt=(300 + r.int(kk, "pair_amt", 1500)) * 100
        * pl.when(pl.col("offsite_type").is_not_null()).then(2).otherwise(1),
    ).with_columns(
        fulamt_ownpay_amt=pl.col("medfee_sumamt") * r.int(kk, "pair_ful", 800) // 10_000,
        overlmt_selfpay=pl.lit(0, pl.Int64),
    ).with_columns(
        cls_b_amt=(pl.col("medfee_sumamt") - pl.col("fulamt_ownpay_amt")) * (2000 + r.int(kk, "pair_b", 3000)) // 10_000,
    ).with_columns(
        cls_a_amt=pl.col("medfee_sumamt") - pl.col("fulamt_ownpay_amt") - pl.col("cls_b_amt"),
    ).filter(pl.col("setl_time") >= start_dt)
    lines = pl.concat([lines, pairs.select(lines.columns)])
    # reversals (退费/冲销) of some lines, and for half of them a corrected re-settlement
    cand = lines.filter(r.u(kk, "reverse") < 0.004)
    stayish = pl.col("med_type").is_in(list(STAY_MED_TYPES))
    delay = pl.when(stayish).then(86_400 + r.int(kk, "rev_delay", 20 * 86_400)).otherwise(600 + r.int(kk, "rev_delay", 3 * 86_400))
    rev = cand.with_columns(
        orig_key=kk,
        key=kk + _REV_BIT,
        setl_time=pl.col("setl_time") + pl.duration(seconds=delay),
        medfee_sumamt=-pl.col("medfee_sumamt"),
        fulamt_ownpay_amt=-pl.col("fulamt_ownpay_amt"),
        overlmt_selfpay=-pl.col("overlmt_selfpay"),
        cls_a_amt=-pl.col("cls_a_amt"),
        cls_b_amt=-pl.col("cls_b_amt"),
        _rev_related=pl.lit(True),
        _is_reversal=pl.lit(True),
    ).filter(pl.col("setl_time") < end_dt)
    resettle = rev.filter(r.u(pl.col("orig_key"), "resettle") < 0.5).with_columns(
        key=pl.col("orig_key") + _RESETTLE_BIT,
        setl_time=pl.col("setl_time") + pl.duration(seconds=600 + r.int(pl.col("orig_key"), "resettle_t", 3000)),
        fulamt_ownpay_amt=(-pl.col("fulamt_ownpay_amt")) // 2,
        overlmt_selfpay=-pl.col("overlmt_selfpay"),
        cls_a_amt=-pl.col("cls_a_amt"),
        cls_b_amt=-pl.col("cls_b_amt"),
        orig_key=pl.lit(None, pl.Int64),
        _is_reversal=pl.lit(False),
    ).with_columns(
        medfee_sumamt=pl.col("fulamt_ownpay_amt") + pl.col("overlmt_selfpay") + pl.col("cls_a_amt") + pl.col("cls_b_amt"),
    ).filter(pl.col("setl_time") < end_dt)
    lines = lines.with_columns(_rev_related=pl.col("key").is_in(rev["orig_key"].implode()))
    return pl.concat([lines, rev, resettle])


SETTLEMENT_COLUMNS = [
    "setl_id", "mdtrt_id", "psn_no", "insutype", "med_type", "fixmedins_code", "begndate", "enddate", "setl_time",
    "dise_codg", "dise_cert_code", "offsite_type", "presc_fixmedins_code", "trauma_report_no", "is_emergency_rescue",
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt", "orig_setl_id",
    "hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay",
    # extra columns (DATA.md: "add columns freely"): names make the file's encoding matter
    "psn_name", "fixmedins_name",
]
MONEY_COLUMNS = ["medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt",
                 "hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay"]
REPORTED_COLUMNS = ["hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay"]


def _number(p: SampleParams, lines: pl.DataFrame, offsets: dict[int, int]) -> tuple[pl.DataFrame, dict[int, int]]:
    """Assign setl_id per month (continuing `offsets` of earlier chunks), mdtrt_id and orig_setl_id."""
    lines = lines.with_columns(month=pl.col("setl_time").dt.month().cast(pl.Int64)).sort("month", "setl_time", "key")
    lines = lines.with_columns(_n=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("month"))
    off = pl.DataFrame({"month": list(range(1, 13)), "_off": [offsets.get(m, 0) for m in range(1, 13)]},
                       schema={"month": pl.Int64, "_off": pl.Int64})
    lines = lines.join(off, on="month", how="left", maintain_order="left").with_columns(
        setl_id=pl.format("S{}{}{}", pl.lit(str(p.year)), pl.col("month").cast(pl.String).str.zfill(2),
                          (pl.col("_n") + pl.col("_off")).cast(pl.String).str.zfill(8)),
        mdtrt_id=pl.format("MD{}{}", pl.lit(str(p.year)), pl.col("mdtrt_key").cast(pl.String).str.zfill(13)),
    )
    counts = lines.group_by("month").agg(pl.len()).sort("month")
    new_offsets = dict(offsets)
    for m, n in counts.iter_rows():
        new_offsets[m] = new_offsets.get(m, 0) + n
    ids = lines.select(orig_key="key", orig_setl_id="setl_id")
    lines = lines.join(ids, on="orig_key", how="left", maintain_order="left").drop("_n", "_off")
    return lines, new_offsets


# --------------------------------------------------------------------------------------------------
# One chunk
# --------------------------------------------------------------------------------------------------


RESOLVE_BATCH = 200_000


@dataclass
class ChunkResult:
    persons: pl.DataFrame
    identities: pl.DataFrame
    employment: pl.DataFrame
    certifications: pl.DataFrame
    family_bindings: pl.DataFrame
    account_balances: pl.DataFrame
    applications: pl.DataFrame
    lines: pl.DataFrame  # typed work frame: SETTLEMENT_COLUMNS (money in fen) + month, file, helper columns
    setl_offsets: dict[int, int]
    maternity_events: pl.DataFrame | None = None  # docs/MATERNITY_INPUT.md, with `month` (of event_date)


@dataclass
class Institutions:
    register: pl.DataFrame
    pools: pl.DataFrame
    members: pl.DataFrame

    @classmethod
    def build(cls, p: SampleParams) -> Institutions:
        reg = generate_institutions(p)
        pools, members = _institution_pools(reg)
        return cls(reg, pools, members)


# POLICY §4.7 gives Xiangyang residents general outpatient and chronic care only; the sample generates no line
# that would stop the run on a missing parameter (transforms/resident/xiangyang.py, "prepare"): no assistance
# identities (policies/xiangyang/resident/assistance.yaml assistance_identities), no special-drug qualification,
# and none of these lines.
XY_RESIDENT_ASSISTANCE_IDENTITIES = ["tekun", "dibao", "fanpin", "illness_poor"]
XY_RESIDENT_NO_RULE_MED_TYPES = ["21", "22", "24", "28", "52", "9901"]  # stays and two-disease


def _xy_resident_adjudicable(lines: pl.DataFrame, inst: pl.DataFrame) -> pl.DataFrame:
    """Drop the Xiangyang resident lines §4.7 has no parameters for: stays (a rescue too), two-disease, and
    general outpatient care outside the city."""
    adm = inst.select("fixmedins_code", pl.col("admdvs").alias("_inst_adm"))
    lines = lines.join(adm, on="fixmedins_code", how="left", maintain_order="left")
    xy_res = pl.col("psn_no").str.starts_with(XIANGYANG) & (pl.col("insutype") == "390")
    rescue = (pl.col("med_type") == "13") & pl.col("is_emergency_rescue").fill_null(False)
    away = ~pl.col("_inst_adm").str.starts_with(XIANGYANG).fill_null(False)
    no_rule = pl.col("med_type").is_in(XY_RESIDENT_NO_RULE_MED_TYPES) | rescue | away
    return lines.filter(~(xy_res & no_rule)).drop("_inst_adm")


MATERNITY_EVENT_KINDS = {"event_date": "date", "babies": "int", "gestation_months": "int", "delivery_cost": "money",
                         "spouse_employee": "bool"}


def _maternity_events(lines: pl.DataFrame, r: _Rng) -> pl.DataFrame:
    """POLICY §4.6 events of Xiangyang employees (docs/MATERNITY_INPUT.md): a delivery for each delivery stay (52:
    natural or caesarean, now and then twins, the stay's cost, sometimes an employee husband) and a miscarriage for
    each miscarriage visit (51 with O20.0: 1–6 completed months)."""
    kk = pl.col("key")
    mine = lines.filter(pl.col("psn_no").str.starts_with(XIANGYANG) & (pl.col("insutype") == "310")
                        & ~pl.col("_is_reversal"))
    births = mine.filter(pl.col("med_type") == "52").select(
        "psn_no", event_date=pl.col("begndate"),
        kind=pl.when(r.u(kk, "mat_kind") < 0.35).then(pl.lit("caesarean")).otherwise(pl.lit("natural")),
        babies=pl.when(r.u(kk, "mat_babies") < 0.05).then(2).otherwise(1).cast(pl.Int32),
        gestation_months=pl.lit(None, pl.Int32), delivery_cost=pl.col("medfee_sumamt"),
        spouse_employee=r.u(kk, "mat_spouse") < 0.3)
    losses = mine.filter((pl.col("med_type") == "51") & (pl.col("dise_codg") == "O20.0")).select(
        "psn_no", event_date=pl.col("setl_time").dt.date(), kind=pl.lit("miscarriage"),
        babies=pl.lit(None, pl.Int32), gestation_months=(1 + r.int(kk, "mat_months", 6)).cast(pl.Int32),
        delivery_cost=pl.lit(None, pl.Int64), spouse_employee=pl.lit(None, pl.Boolean))
    return pl.concat([births, losses]).with_columns(month=pl.col("event_date").dt.month()).sort("event_date", "psn_no")


def generate_chunk(p: SampleParams, chunk: int, inst: Institutions, setl_offsets: dict[int, int] | None = None
                   ) -> ChunkResult:
    """Registers and all settlement lines of the period for persons of chunk `chunk`."""
    r = _Rng(p.seed)
    persons = _persons(p, chunk, r)
    identities = _identities(p, persons, r, chunk)
    employment = _employment(p, persons, r)
    certs = _certifications(p, persons, r, chunk)
    bindings = _bindings(p, persons, r, chunk)
    balances = _balances(p, persons, employment, r)
    apps = _applications(p, identities, r, chunk)
    low_income = (
        identities.filter(pl.col("identity").is_in(list(LOW_INCOME_IDENTITIES))).select("idx").unique()
        .join(persons.filter(pl.col("rural")).select("idx"), on="idx", how="inner").with_columns(low_income=pl.lit(True))
    )
    visits = _visits(p, persons, certs, apps, r, chunk)
    # every draw is keyed by the line, so resolving in batches gives the same lines with less memory
    lines = pl.concat([
        _resolve(p, visits.slice(o, RESOLVE_BATCH), persons, low_income, inst.pools, inst.members, r)
        for o in range(0, max(visits.height, 1), RESOLVE_BATCH)
    ])
    lines = _xy_resident_adjudicable(lines, inst.register)
    pair_keys = visits.filter(pl.col("pair") & (pl.col("med_type") == "24")).select("key").with_columns(
        _pair=pl.lit(True))
    lines = lines.join(pair_keys, on="key", how="left", maintain_order="left").with_columns(
        pl.col("_pair").fill_null(False))
    lines = _derive(p, lines, r).drop("_pair")
    lines, offsets = _number(p, lines, setl_offsets or {})
    lines = lines.with_columns(
        file=pl.when(pl.col("facility") == "pharmacy").then(pl.lit("pharmacy")).otherwise(pl.lit("hospital")),
        **{c: pl.lit(None, pl.Int64) for c in REPORTED_COLUMNS},
    )
    return ChunkResult(
        persons=persons.select(PERSON_COLUMNS),
        identities=identities.select("psn_no", "identity", "begndate", "enddate"),
        employment=employment.select("psn_no", "psn_type", "flexible", "contrib_mode", "contrib_base", "retire_kind",
                                     "benefit", "begndate", "enddate"),
        certifications=certs.select("psn_no", "dise_cert_code", "dise_codg", "kind", "begndate", "enddate"),
        family_bindings=bindings,
        account_balances=balances.select("psn_no", "as_of", "balc"),
        applications=apps.select("app_id", "psn_no", "identity", "confirm_date"),
        lines=lines.select([*SETTLEMENT_COLUMNS, "month", "file", "key", "_rev_related", "_is_reversal"]),
        setl_offsets=offsets,
        maternity_events=_maternity_events(lines, r),
    )


# --------------------------------------------------------------------------------------------------
# Text rendering (what the bureau writes)
# --------------------------------------------------------------------------------------------------

REGISTER_KINDS: dict[str, dict[str, str]] = {
    "persons": {"brdy": "date", "enrol_date": "date", "rural": "bool"},
    "identities": {"begndate": "date", "enddate": "date"},
    "employment": {"flexible": "bool", "contrib_base": "money", "begndate": "date", "enddate": "date"},
    "certifications": {"begndate": "date", "enddate": "date"},
    "institutions": {"offsite_outpatient_enabled": "bool"},
    "family_bindings": {"begndate": "date", "enddate": "date"},
    "account_balances": {"as_of": "date", "balc": "money"},
    "assistance_applications": {"confirm_date": "date"},
}
SETTLEMENT_KINDS: dict[str, str] = {
    "begndate": "date", "enddate": "date", "setl_time": "datetime", "is_emergency_rescue": "bool",
    **{c: "money" for c in MONEY_COLUMNS},
}


def fen_text(e: pl.Expr) -> pl.Expr:
    """Integer fen -> yuan text with exactly 2 decimals ("-0.05", "1234.50")."""
    a = e.abs()
    return pl.format("{}{}.{}", pl.when(e < 0).then(pl.lit("-")).otherwise(pl.lit("")), a // 100,
                     (a % 100).cast(pl.String).str.zfill(2))


def as_text(df: pl.DataFrame, kinds: dict[str, str]) -> pl.DataFrame:
    """Every column as text (nulls stay null = empty cell)."""
    exprs = []
    for c in df.columns:
        kind = kinds.get(c, "str")
        col = pl.col(c)
        if kind == "money":
            e = fen_text(col)
        elif kind == "date":
            e = col.dt.strftime("%Y-%m-%d")
        elif kind == "datetime":
            e = col.dt.strftime("%Y-%m-%d %H:%M:%S")
        elif kind == "bool":
            e = pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).otherwise(None)
        else:
            e = col.cast(pl.String)
        exprs.append(e.cast(pl.String).alias(c))
    return df.select(exprs)


def text_to_typed(df: pl.DataFrame, kinds: dict[str, str]) -> pl.DataFrame:
    """Text frame -> Parquet-friendly types (money Decimal(18,2), Date, Datetime, Boolean). A column holding a
    value that cannot be read as its type (an injected BAD_VALUE) stays text."""
    out = []
    for c in df.columns:
        kind = kinds.get(c, "str")
        col = pl.col(c)
        if kind == "money":
            e = col.cast(pl.Decimal(18, 2))
        elif kind == "date":
            e = col.str.to_date("%Y-%m-%d", strict=False)
        elif kind == "datetime":
            e = col.str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False)
        elif kind == "bool":
            e = pl.when(col == "true").then(True).when(col == "false").then(False).otherwise(None)
        else:
            out.append(col)
            continue
        conv = df.select(e.alias(c)).to_series()
        if (conv.is_null() & df[c].is_not_null()).any():
            out.append(col)
        else:
            out.append(pl.lit(conv).alias(c))
    return df.select(out)


# --------------------------------------------------------------------------------------------------
# Invalid rows
# --------------------------------------------------------------------------------------------------

# settlement rows; REVERSAL_AFTER_MERGE (POLICY §1.12) needs an emergency line and its stay line before the
# reversal: not injected (tests/resident/test_merged_stays.py produces it, in one month and across months)
REASON_CODES = [c for c in REJECT_REASONS if c not in EVENT_ONLY_REASONS and c != "REVERSAL_AFTER_MERGE"]
_ANY = {"MISSING_REQUIRED", "BAD_VALUE", "BAD_CODE", "AMOUNT_MISMATCH", "NEGATIVE_AMOUNT", "WRONG_MONTH",
        "UNKNOWN_PERSON", "UNKNOWN_INSTITUTION", "UNKNOWN_REVERSAL", "CERT_INVALID"}
_AMOUNT_TEXT_COLS = ["medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt"]


def _neg_text(t: str | None) -> str | None:
    if t is None:
        return None
    return fen_to_yuan_text(-(yuan_text_to_fen(t) or 0))


def _add_text(t: str, fen: int) -> str:
    return fen_to_yuan_text((yuan_text_to_fen(t) or 0) + fen)


@dataclass
class InvalidInjector:
    """Replaces `rate` of the settlement rows by invalid rows, cycling through REJECT_REASONS.

    Stateful across frames (the cycle, the fractional carry, valid reversals seen in earlier months of the
    current chunk); call `start_chunk` before each chunk and `inject` on each file frame in month order."""

    year: int
    rate: float
    seed: int = 0
    _cycle: int = 0
    _pending: list[str] = field(default_factory=list)
    _carry: float = 0.0
    _reversals: list[tuple[int, dict]] = field(default_factory=list)  # (month, text row) of valid reversals
    _serial: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def start_chunk(self) -> None:
        self._reversals = []

    def _next_reason(self, ok) -> str | None:
        for i, reason in enumerate(self._pending):
            if ok(reason):
                return self._pending.pop(i)
        for _ in range(len(REASON_CODES)):
            reason = REASON_CODES[self._cycle % len(REASON_CODES)]
            self._cycle += 1
            if ok(reason):
                return reason
            if reason not in self._pending:
                self._pending.append(reason)
        return None

    def inject(self, typed: pl.DataFrame, text: pl.DataFrame, month: int, file_kind: str
               ) -> tuple[pl.DataFrame, list[dict]]:
        """`typed`: the file's work frame (row order = file order); `text`: the same rows as text.
        Returns the text frame with invalid rows in place and one record per injected row."""
        n_rows = text.height
        exact = n_rows * self.rate + self._carry
        n_slots = int(exact)
        self._carry = exact - n_slots
        records: list[dict] = []
        if n_slots == 0 or n_rows == 0:
            self._remember_reversals(typed, text, set(), month)
            return text, records
        self._serial += 1
        # candidate rows in a pseudo-random order: a bounded number of them, drawn by hashing the line key
        salt = int.from_bytes(hashlib.blake2b(
            f"{self.seed}:{self.year}:{month}:{file_kind}:{self._serial}".encode(), digest_size=8).digest(), "big")
        work = typed.select(
            pos=pl.int_range(pl.len(), dtype=pl.Int64), h=pl.col("key").map_batches(
                lambda k: _hash_series(k, salt), return_dtype=pl.Int64, is_elementwise=True),
            rev="_rev_related", is_rev="_is_reversal", insutype="insutype", med_type="med_type",
            cert=pl.col("dise_cert_code").is_not_null(),
        )
        rev_related = work["rev"]
        cls_a = typed["cls_a_amt"]
        pool = work.filter(~pl.col("rev")).sort("h", "pos").head(60 * n_slots + 2000)
        free = pool["pos"].to_list()
        cert = dict(zip(free, pool["cert"].to_list(), strict=True))
        insutype = dict(zip(free, pool["insutype"].to_list(), strict=True))
        med_type = dict(zip(free, pool["med_type"].to_list(), strict=True))
        taken: set[int] = set()
        protected: set[int] = set()
        same_file_revs = work.filter(pl.col("is_rev"))["pos"].to_list()
        first_rev = same_file_revs[0] if same_file_revs else None

        def earlier_partner(pos: int, need_cls_a: bool = False) -> int | None:
            for q in range(pos - 1, max(-1, pos - 200), -1):
                if q in taken or q in protected or rev_related[q]:
                    continue
                if need_cls_a and (cls_a[q] or 0) < 2:
                    continue
                return q
            return None

        earlier_months_reversed = bool(self._earlier_reversals(month))
        certified = [i for i in free if cert[i]]
        uncertified = [i for i in free if not cert[i]]
        lists: dict[str, list[int]] = {
            "ANY": free,
            "SCHEME_MISMATCH": [i for i in uncertified if med_type[i] in ("11", "21", "41", "13", "28")],
            "NO_RULE": [i for i in certified if insutype[i] == "310"] + [i for i in uncertified if insutype[i] == "310"],
            "CERT_INVALID": certified + uncertified,
            # moving the date or losing the person would also break a certification check
            "WRONG_MONTH": uncertified,
            "UNKNOWN_PERSON": uncertified,
            "DUPLICATE_SETL_ID": [i for i in free if i > 0],
            "REVERSAL_MISMATCH": [i for i in free if i > 0],
            "ALREADY_REVERSED": [i for i in free if earlier_months_reversed
                                 or (first_rev is not None and i > first_rev)],
        }
        ptr: dict[str, int] = {}

        def realize(reason: str) -> tuple[int, dict] | None:
            key = reason if reason in lists else "ANY"
            lst = lists[key]
            j = ptr.get(key, 0)
            tries = 0
            while j < len(lst) and tries < 50:
                i = lst[j]
                if i in taken or i in protected:
                    j += 1
                    continue
                change = self._make(reason, i, text, month, earlier_partner, same_file_revs, taken, protected)
                if change is not None:
                    ptr[key] = j
                    return i, change
                j += 1
                tries += 1
            ptr[key] = j
            return None

        cache: dict[str, tuple[int, dict] | None] = {}

        def ok(reason: str) -> bool:
            cache[reason] = realize(reason)
            return cache[reason] is not None

        changes: dict[int, dict] = {}
        for _ in range(n_slots):
            reason = self._next_reason(ok)
            if reason is None:
                break
            pos, change = cache[reason]
            taken.add(pos)
            changes[pos] = change
            cache.clear()
            records.append({"position": pos, "reason": reason})
        # apply
        cols: dict[str, tuple[list[int], list]] = {}
        for pos, change in changes.items():
            for c, val in change.items():
                cols.setdefault(c, ([], []))
                cols[c][0].append(pos)
                cols[c][1].append(val)
        if cols:
            series = {c: text[c].clone() for c in cols}
            for c, (idxs, vals) in cols.items():
                series[c].scatter(idxs, pl.Series(vals, dtype=pl.String))
            text = text.with_columns([series[c].alias(c) for c in cols])
        ids = text["setl_id"].to_list()
        label = f"{self.year}-{month:02d}"
        for rec in records:
            rec["setl_id"] = ids[rec["position"]]
            rec["source_row"] = rec.pop("position") + 1
            self.counts.setdefault(label, {})
            self.counts[label][rec["reason"]] = self.counts[label].get(rec["reason"], 0) + 1
        self._remember_reversals(typed, text, taken, month)
        return text, records

    def _remember_reversals(self, typed: pl.DataFrame, text: pl.DataFrame, taken: set[int], month: int) -> None:
        if typed.height == 0:
            return
        idx = [i for i, v in enumerate(typed["_is_reversal"].to_list()) if v and i not in taken]
        for i in idx[-20:]:
            self._reversals.append((month, text.row(i, named=True)))
        self._reversals = self._reversals[-50:]

    def _earlier_reversals(self, month: int) -> list[dict]:
        """Valid reversals of earlier months of this chunk (a same-month one in another file may settle later)."""
        return [row for m, row in self._reversals if m < month]

    def _make(self, reason: str, i: int, text: pl.DataFrame, month: int, earlier_partner, same_file_revs,
              taken: set[int], protected: set[int]) -> dict | None:
        row = text.row(i, named=True)
        y = self.year
        self._serial += 1
        n = self._serial
        if reason == "MISSING_REQUIRED":
            return {"setl_id": None}
        if reason == "BAD_VALUE":
            return {"begndate": f"{y}-02-30"}
        if reason == "BAD_CODE":
            return {"med_type": "99"}
        if reason == "AMOUNT_MISMATCH":
            return {"medfee_sumamt": _add_text(row["medfee_sumamt"], 1)}
        if reason == "NEGATIVE_AMOUNT":
            return {c: _neg_text(row[c]) for c in _AMOUNT_TEXT_COLS}
        if reason == "WRONG_MONTH":
            other = month - 1 if month > 1 else month + 1
            st = row["setl_time"]
            d = date(int(st[:4]), int(st[5:7]), int(st[8:10]))
            nd = date(y, other, min(d.day, 28))
            delta = nd - d
            shift = lambda t: None if t is None else (date.fromisoformat(t[:10]) + delta).isoformat() + t[10:]  # noqa: E731
            return {"setl_time": shift(st), "begndate": shift(row["begndate"]), "enddate": shift(row["enddate"])}
        if reason == "UNKNOWN_PERSON":
            adm = row["psn_no"][:6]
            return {"psn_no": f"{adm}99{n % 10**8:08d}"}
        if reason == "UNKNOWN_INSTITUTION":
            code = row["fixmedins_code"]
            return {"fixmedins_code": f"{code[:7]}99{n % 1000:03d}"}
        if reason == "SCHEME_MISMATCH":
            return {"insutype": "390" if row["insutype"] == "310" else "310"}
        if reason == "NO_RULE":
            return {"med_type": "9901"}
        if reason == "CERT_INVALID":
            return {"dise_cert_code": "M99900"}
        if reason == "UNKNOWN_REVERSAL":
            change = {c: _neg_text(row[c]) for c in _AMOUNT_TEXT_COLS}
            change["orig_setl_id"] = f"S{y}00{n % 10**8:08d}"
            return change
        if reason == "DUPLICATE_SETL_ID":
            q = earlier_partner(i)
            if q is None:
                return None
            protected.add(q)
            return {"setl_id": text["setl_id"][q]}
        if reason == "REVERSAL_MISMATCH":
            q = earlier_partner(i, need_cls_a=True)
            if q is None:
                return None
            protected.add(q)
            src = text.row(q, named=True)
            change = {c: src[c] for c in text.columns if c not in ("setl_id", "setl_time")}
            for c in _AMOUNT_TEXT_COLS:
                change[c] = _neg_text(src[c])
            change["cls_a_amt"] = _add_text(change["cls_a_amt"], 1)
            change["medfee_sumamt"] = _add_text(change["medfee_sumamt"], 1)
            change["orig_setl_id"] = src["setl_id"]
            return change
        if reason == "ALREADY_REVERSED":
            earlier = [q for q in same_file_revs if q < i and q not in taken]
            if earlier:
                src = text.row(earlier[-1], named=True)
            elif self._earlier_reversals(month):
                src = self._earlier_reversals(month)[n % len(self._earlier_reversals(month))]
            else:
                return None
            return {c: src[c] for c in text.columns if c not in ("setl_id", "setl_time")}
        raise ValueError(reason)
