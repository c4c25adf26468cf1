"""Parallel Japanese/English clinical text for a synthetic coronary angiography (CAG) exam.

The paper pairs each key frame with the patient's pre-procedure report (Japanese, カテーテル
検査前) and an expert-validated diagnostic and treatment summary, plus English translations.
Those texts are not public, so this module writes stand-ins that agree with the simulated
lesions: `sample_clinical_facts` draws a plausible patient (age, sex, risk factors, history,
complaint, non-invasive findings correlated with the disease burden) and `make_reports`
renders both texts in both languages.

Conventions:
- segments are AHA numbers written "#6" (Austen et al., "A reporting system on patients evaluated for
  coronary artery disease", Circulation 1975;51(4 Suppl):5-40, doi:10.1161/01.CIR.51.4.5, the numbering
  Japanese reports use); RCA distal branches are "#4PD" / "#4AV";
- grades are 25, 50, 75, 90, 99 (subtotal) and 100 (total occlusion) percent;
- a lesion is significant at >= 75 %, or >= 50 % in the left main (#5);
- plan: CABG for significant left main or three-vessel disease; otherwise PCI to the culprit
  (most severe significant lesion; ties -> the shallower branch level, then AHA order,
  i.e. the most proximal); medical therapy when the worst lesion is 50 %; follow-up otherwise.

Every text field has several paraphrases in `*_TEMPLATES` tables of (ja, en) pairs; one rng
draw picks the index used for both languages, so the two texts stay parallel translations.
The same rng state always gives the same texts. No names, IDs or dates appear anywhere.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- vocabulary
GRADES: tuple[int, ...] = (25, 50, 75, 90, 99, 100)
# Report order: RCA, left main, LAD, LCx; each vessel proximal to distal.
SEGMENTS: tuple[str, ...] = ("1", "2", "3", "4PD", "4AV", "5", "6", "7", "8", "9", "10",
                             "11", "12", "13", "14", "15")
RISK_FACTORS: tuple[str, ...] = ("hypertension", "dyslipidemia", "diabetes", "smoking", "ckd",
                                 "family_history", "obesity")
HISTORY: tuple[str, ...] = ("prior_pci", "prior_mi", "prior_cabg", "stroke", "pad")
COMPLAINTS: tuple[str, ...] = ("effort_angina", "unstable_angina", "atypical_chest_pain",
                               "dyspnea", "screening")
DOMINANCES: tuple[str, ...] = ("right", "left", "balanced")
PLANS: tuple[str, ...] = ("PCI", "CABG", "medical", "follow_up")
TERRITORIES: tuple[str, ...] = ("anterior", "lateral", "inferior")
VESSELS: tuple[str, ...] = ("rca", "lmt", "lad", "lcx")
NONINVASIVE_FINDINGS: tuple[str, ...] = (
    "treadmill_positive", "treadmill_negative",
    *(f"spect_ischemia_{t}" for t in TERRITORIES), "spect_normal",
    *(f"ccta_stenosis_{v}" for v in VESSELS), "ccta_no_significant_stenosis",
    "echo_wall_motion", "echo_normal", "ecg_st_change",
)
NEGATIVE_FINDINGS: frozenset[str] = frozenset(
    {"treadmill_negative", "spect_normal", "ccta_no_significant_stenosis", "echo_normal"})

VESSEL_OF: dict[str, str] = {s: "rca" for s in ("1", "2", "3", "4PD", "4AV")} | {"5": "lmt"} | {
    str(i): "lad" for i in range(6, 11)} | {str(i): "lcx" for i in range(11, 16)}
# Myocardial territory shown by perfusion imaging; #15 is the PD branch of a left-dominant LCx.
TERRITORY_OF: dict[str, str] = {s: ("inferior" if v == "rca" else "lateral" if v == "lcx"
                                    else "anterior") for s, v in VESSEL_OF.items()} | {"15": "inferior"}
# Branch level used to break culprit ties (0 = left main, 1 = proximal ... 4 = distal branch).
DEPTH_OF: dict[str, int] = {"5": 0, "1": 1, "6": 1, "11": 1, "2": 2, "7": 2, "9": 2, "12": 2,
                            "3": 3, "8": 3, "10": 3, "13": 3, "4PD": 4, "4AV": 4, "14": 4, "15": 4}

# ----------------------------------------------------------------------------- term tables (ja, en)
VESSEL_LABEL: dict[str, tuple[str, str]] = {
    "rca": ("RCA", "RCA"), "lmt": ("LMT", "LM"), "lad": ("LAD", "LAD"), "lcx": ("LCx", "LCx")}
CCTA_VESSEL: dict[str, tuple[str, str]] = {
    "rca": ("RCA", "RCA"), "lmt": ("左主幹部", "left main"), "lad": ("LAD", "LAD"), "lcx": ("LCx", "LCx")}
TERRITORY_LABEL: dict[str, tuple[str, str]] = {
    "anterior": ("前壁", "anterior"), "lateral": ("側壁", "lateral"), "inferior": ("下壁", "inferior")}
DOMINANCE_TERM: dict[str, tuple[str, str]] = {
    "right": ("右冠動脈優位", "right-dominant"), "left": ("左冠動脈優位", "left-dominant"),
    "balanced": ("バランス型", "balanced (co-dominant)")}
SEX_TERM: dict[str, tuple[str, str, str]] = {"M": ("男性", "man", "male"), "F": ("女性", "woman", "female")}
RISK_TERM: dict[str, tuple[str, str]] = {
    "hypertension": ("高血圧", "hypertension"), "dyslipidemia": ("脂質異常症", "dyslipidemia"),
    "diabetes": ("糖尿病", "diabetes mellitus"), "smoking": ("喫煙歴", "smoking"),
    "ckd": ("慢性腎臓病", "chronic kidney disease"),
    "family_history": ("冠動脈疾患の家族歴", "family history of coronary artery disease"),
    "obesity": ("肥満", "obesity")}
HISTORY_TERM: dict[str, tuple[str, str]] = {
    "prior_pci": ("PCI歴", "previous PCI"), "prior_mi": ("陳旧性心筋梗塞", "old myocardial infarction"),
    "prior_cabg": ("CABG歴", "previous CABG"), "stroke": ("脳梗塞", "cerebral infarction"),
    "pad": ("末梢動脈疾患", "peripheral artery disease")}
COMPLAINT_TERM: dict[str, tuple[str, str]] = {
    "effort_angina": ("労作時胸痛", "exertional chest pain"),
    "unstable_angina": ("安静時にも出現する胸痛の増悪", "worsening chest pain now also occurring at rest"),
    "atypical_chest_pain": ("非典型的な胸部違和感", "atypical chest discomfort"),
    "dyspnea": ("労作時息切れ", "exertional dyspnea")}
FINDING_TERM: dict[str, tuple[str, str]] = {
    "treadmill_positive": ("トレッドミル運動負荷試験陽性", "positive treadmill exercise test"),
    "treadmill_negative": ("トレッドミル運動負荷試験陰性", "negative treadmill exercise test"),
    **{f"spect_ischemia_{t}": (f"負荷心筋血流シンチで{ja}虚血", f"{en} ischemia on stress perfusion SPECT")
       for t, (ja, en) in TERRITORY_LABEL.items()},
    "spect_normal": ("負荷心筋血流シンチで虚血なし", "no ischemia on stress perfusion SPECT"),
    **{f"ccta_stenosis_{v}": (f"冠動脈CTで{ja}に有意狭窄疑い", f"suspected significant {en} stenosis on coronary CT")
       for v, (ja, en) in CCTA_VESSEL.items()},
    "ccta_no_significant_stenosis": ("冠動脈CTで有意狭窄なし", "no significant stenosis on coronary CT"),
    "echo_wall_motion": ("心エコーで局所壁運動異常", "regional wall motion abnormality on echocardiography"),
    "echo_normal": ("心エコーで壁運動異常なし", "no wall motion abnormality on echocardiography"),
    "ecg_st_change": ("心電図でST変化", "ST-segment changes on ECG")}
INDICATION_TERM: dict[str, tuple[str, str]] = {
    "effort_angina": ("労作性狭心症疑い", "suspected effort angina"),
    "unstable_angina": ("不安定狭心症疑い", "suspected unstable angina"),
    "atypical_chest_pain": ("胸部症状の精査", "evaluation of chest symptoms"),
    "dyspnea": ("労作時息切れの精査", "evaluation of exertional dyspnea"),
    "ischemia": ("非侵襲的検査での異常所見", "abnormal non-invasive test results"),
    "prior_pci": ("PCI後の再評価", "reassessment after previous PCI"),
    "screening": ("無症候例のスクリーニング", "screening of an asymptomatic patient"),
    "screening_risk": ("冠危険因子を有する無症候例のスクリーニング", "screening of an asymptomatic patient with risk factors")}
NUMBER_WORD: dict[int, str] = {1: "single", 2: "two", 3: "three"}

# ----------------------------------------------------------------------------- templates (ja, en)
Pair = tuple[str, str]
INTRO_TEMPLATES: tuple[Pair, ...] = (
    ("{age}歳{sex_ja}。", "{Art} {age}-year-old {sex_noun}."),
    ("【患者】{age}歳、{sex_ja}", "Patient: {age}-year-old {sex_adj}."),
    ("症例は{age}歳の{sex_ja}。", "The patient is {art} {age}-year-old {sex_noun}."))
COMPLAINT_TEMPLATES: tuple[Pair, ...] = (
    ("【主訴】{ja}", "Chief complaint: {en}."),
    ("主訴は{ja}。", "The chief complaint is {en}."),
    ("{ja}を主訴に紹介受診。", "Referred with {en}."))
SCREENING_TEMPLATES: tuple[Pair, ...] = (
    ("【主訴】なし（無症状、スクリーニング目的）", "Chief complaint: none (asymptomatic; screening)."),
    ("自覚症状はなく、スクリーニング目的の精査。", "No symptoms; evaluated for screening."),
    ("無症状であるが、精査目的に紹介受診。", "Referred for evaluation although asymptomatic."))
RISK_TEMPLATES: tuple[Pair, ...] = (
    ("【冠危険因子】{ja}", "Coronary risk factors: {en}."),
    ("冠危険因子として{ja}を有する。", "Risk factors include {en}."),
    ("リスクファクター：{ja}", "Risk factors: {en}."))
NO_RISK_TEMPLATES: tuple[Pair, ...] = (
    ("【冠危険因子】なし", "Coronary risk factors: none."),
    ("冠危険因子として特記すべきものなし。", "No coronary risk factors."),
    ("リスクファクター：なし", "Risk factors: none."))
HISTORY_TEMPLATES: tuple[Pair, ...] = (
    ("【既往歴】{ja}", "Past history: {en}."),
    ("既往歴として{ja}あり。", "History of {en}."),
    ("既往歴：{ja}", "Medical history: {en}."))
NO_HISTORY_TEMPLATES: tuple[Pair, ...] = (
    ("【既往歴】特記事項なし", "Past history: unremarkable."),
    ("特記すべき既往なし。", "No relevant past history."),
    ("既往歴：なし", "Medical history: none."))
NONINVASIVE_TEMPLATES: tuple[Pair, ...] = (
    ("【非侵襲的検査】{ja}", "Non-invasive tests: {en}."),
    ("非侵襲的検査所見：{ja}。", "Non-invasive findings: {en}."),
    ("事前の検査では{ja}という結果であった。", "Prior testing showed {en}."))
NO_NONINVASIVE_TEMPLATES: tuple[Pair, ...] = (
    ("【非侵襲的検査】未施行", "Non-invasive tests: not performed."),
    ("非侵襲的検査は未施行。", "No non-invasive testing was performed."),
    ("事前の負荷試験や画像検査は行われていない。", "No prior stress testing or imaging was done."))
INDICATION_TEMPLATES: tuple[Pair, ...] = (
    ("【適応】{ja}のため、冠動脈造影を施行する。", "Indication: coronary angiography for {en}."),
    ("{ja}に対し、CAGの適応と判断した。", "CAG is indicated for {en}."),
    ("適応：{ja}、冠動脈の評価目的にCAG施行。", "Indication: {en}; CAG to assess the coronary arteries."))
DOMINANCE_TEMPLATES: tuple[Pair, ...] = (
    ("{ja}。", "{En} circulation."),
    ("冠動脈の優位性：{ja}", "Coronary dominance: {en}."),
    ("冠動脈は{ja}である。", "The coronary system is {en}."))
LESION_TEMPLATES: tuple[Pair, ...] = (  # index 0 is rendered one vessel per line
    ("{vessel_ja}：{ja}", "{vessel_en}: {en}"),
    ("CAG所見：{ja}。", "Angiographic findings: {en}."),
    ("冠動脈造影では{ja}を認めた。", "Coronary angiography showed {en}."))
NO_LESION_TEMPLATES: tuple[Pair, ...] = (
    ("冠動脈に狭窄病変なし。", "No coronary stenosis."),
    ("CAG所見：狭窄病変を認めず。", "Angiographic findings: no stenotic lesion."),
    ("冠動脈造影では明らかな狭窄を認めなかった。", "Coronary angiography showed no stenosis."))
DIAGNOSIS_TEMPLATES: tuple[Pair, ...] = (
    ("診断：{ja}。", "Diagnosis: {en}."),
    ("{ja}と判断。", "Conclusion: {en}."),
    ("【診断】{ja}", "Assessment: {en}."))
PLAN_TEMPLATES: dict[str, tuple[Pair, ...]] = {
    "PCI": (("{seg}に対してPCI施行予定。", "PCI to {seg} planned."),
            ("{seg}を責任病変と判断し、PCIの方針とした。", "{seg} is judged to be the culprit lesion; PCI is planned."),
            ("方針：{seg}に対しPCI。", "Plan: PCI to {seg}.")),
    "CABG": (("心臓血管外科にコンサルトし、CABGの方針。", "Referred to cardiac surgery; CABG planned."),
             ("ハートチームで協議のうえCABG施行予定。", "After Heart Team discussion, CABG is planned."),
             ("方針：CABG。", "Plan: CABG.")),
    "medical": (("至適薬物療法を継続する方針。", "Optimal medical therapy will be continued."),
                ("冠血行再建の適応はなく、薬物療法で加療。", "No indication for revascularization; medical therapy."),
                ("方針：薬物療法。", "Plan: medical therapy.")),
    "follow_up": (("有意狭窄なく、外来で経過観察とする。", "No significant stenosis; outpatient follow-up."),
                  ("冠危険因子の管理を行い、経過観察の方針。", "Risk factor management and follow-up."),
                  ("方針：経過観察。", "Plan: follow-up."))}
STAGED_TEMPLATES: tuple[Pair, ...] = (
    ("残存する{ja}は後日staged PCIを検討。", "Staged PCI to the remaining {en} to be considered."),
    ("{ja}については虚血評価のうえ二期的治療を検討。", "Second-stage treatment of {en} after ischemia assessment."),
    ("{ja}は待機的に追加治療予定。", "Additional elective treatment of {en} planned."))


# ----------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class Lesion:
    """One stenosis: AHA segment ("1".."15", "4PD", "4AV") and percent diameter stenosis."""

    segment: str
    percent: int

    def __post_init__(self) -> None:
        if self.segment not in SEGMENTS:
            raise ValueError(f"unknown segment {self.segment!r}; expected one of {SEGMENTS}")
        if self.percent not in GRADES:
            raise ValueError(f"unknown grade {self.percent!r}; expected one of {GRADES}")


@dataclass(frozen=True)
class ClinicalFacts:
    """Everything the two texts say about one exam; codes come from the tuples above."""

    age: int
    sex: str
    risk_factors: tuple[str, ...]
    history: tuple[str, ...]
    complaint: str
    noninvasive: tuple[str, ...]
    dominance: str
    lesions: tuple[Lesion, ...]

    def __post_init__(self) -> None:
        checks = ((self.sex in SEX_TERM, "sex", self.sex), (self.complaint in COMPLAINTS, "complaint", self.complaint),
                  (self.dominance in DOMINANCES, "dominance", self.dominance))
        codes = ((self.risk_factors, RISK_FACTORS), (self.history, HISTORY), (self.noninvasive, NONINVASIVE_FINDINGS))
        for ok, name, value in checks + tuple((set(c) <= set(v), "code", c) for c, v in codes):
            if not ok:
                raise ValueError(f"unknown {name} {value!r}")
        if not all(isinstance(l, Lesion) for l in self.lesions):
            raise TypeError("lesions must be Lesion instances")


def is_significant(lesion: Lesion) -> bool:
    """>= 75 % diameter stenosis, or >= 50 % in the left main (#5)."""
    return lesion.percent >= (50 if lesion.segment == "5" else 75)


def is_positive_finding(code: str) -> bool:
    """True for a non-invasive finding that suggests ischaemia or stenosis."""
    return code in NONINVASIVE_FINDINGS and code not in NEGATIVE_FINDINGS


def sort_lesions(lesions: Iterable[Lesion]) -> list[Lesion]:
    """Report order: RCA, LM, LAD, LCx, each proximal to distal (AHA numbering)."""
    return sorted(lesions, key=lambda l: (SEGMENTS.index(l.segment), -l.percent))


def _severity_order(lesions: Iterable[Lesion]) -> list[Lesion]:
    """Most severe first; ties -> shallower branch level, then AHA order (most proximal)."""
    return sorted(lesions, key=lambda l: (-l.percent, DEPTH_OF[l.segment], SEGMENTS.index(l.segment)))


def diseased_vessels(lesions: Iterable[Lesion]) -> tuple[bool, tuple[str, ...]]:
    """(significant left main?, vessels among rca/lad/lcx with a significant lesion, report order)."""
    sig = [l for l in lesions if is_significant(l)]
    vessels = {VESSEL_OF[l.segment] for l in sig}
    return "lmt" in vessels, tuple(v for v in ("rca", "lad", "lcx") if v in vessels)


def treatment_plan(lesions: Iterable[Lesion]) -> tuple[str, str | None]:
    """(plan, culprit segment): CABG for LM or 3VD, PCI to the culprit, medical, follow_up."""
    lesions = list(lesions)
    left_main, vessels = diseased_vessels(lesions)
    if left_main or len(vessels) == 3:
        return "CABG", None
    significant = [l for l in lesions if is_significant(l)]
    if significant:
        return "PCI", _severity_order(significant)[0].segment
    if any(l.percent >= 50 for l in lesions):
        return "medical", None
    return "follow_up", None


# ----------------------------------------------------------------------------- sampling
def _draw_tests(rng: np.random.Generator, positive: bool, lesion: Lesion | None) -> list[str]:
    """One to two non-invasive findings; positive ones point at `lesion`'s territory if given."""
    kind = str(rng.choice(["treadmill", "spect", "ccta", "ecg"], p=[0.3, 0.3, 0.3, 0.1]))
    territory = TERRITORY_OF[lesion.segment] if lesion else str(rng.choice(TERRITORIES))
    if lesion and lesion.segment == "5":
        territory = str(rng.choice(["anterior", "lateral"]))
    vessel = VESSEL_OF[lesion.segment] if lesion else str(rng.choice(["rca", "lad", "lcx"]))
    if kind == "ecg":
        tests = ["ecg_st_change" if positive else "treadmill_negative"]
    elif positive:
        tests = [{"treadmill": "treadmill_positive", "spect": f"spect_ischemia_{territory}",
                  "ccta": f"ccta_stenosis_{vessel}"}[kind]]
    else:
        tests = [{"treadmill": "treadmill_negative", "spect": "spect_normal",
                  "ccta": "ccta_no_significant_stenosis"}[kind]]
    if positive and lesion and (lesion.percent == 100 or rng.random() < 0.15):
        tests.append("echo_wall_motion")
    elif rng.random() < 0.2:
        tests.append("echo_normal")
    return tests


def sample_clinical_facts(rng: np.random.Generator, lesions: Sequence[Lesion], dominance: str) -> ClinicalFacts:
    """Draw a patient whose symptoms, risk profile and tests fit the disease burden."""
    if dominance not in DOMINANCES:
        raise ValueError(f"unknown dominance {dominance!r}; expected one of {DOMINANCES}")
    lesions = tuple(lesions)
    significant = [l for l in lesions if is_significant(l)]
    burden = "significant" if significant else "moderate" if any(l.percent >= 50 for l in lesions) else "none"
    sig = burden == "significant"
    age = int(np.clip(round(rng.normal(68.0 if sig else 62.0, 9.0)), 40, 85))
    sex = "M" if rng.random() < (0.75 if sig else 0.65) else "F"
    risk_p = {"hypertension": (0.5, 0.7), "dyslipidemia": (0.4, 0.6), "diabetes": (0.2, 0.4),
              "smoking": (0.25, 0.45), "ckd": (0.08, 0.18), "family_history": (0.08, 0.15), "obesity": (0.2, 0.25)}
    risk_factors = tuple(r for r in RISK_FACTORS
                         if rng.random() < risk_p[r][sig] * (0.6 if r == "smoking" and sex == "F" else 1.0))
    hist_p = {"prior_pci": (0.05, 0.2), "prior_mi": (0.03, 0.12), "prior_cabg": (0.005, 0.02),
              "stroke": (0.04, 0.07), "pad": (0.03, 0.08)}
    history = tuple(h for h in HISTORY if rng.random() < hist_p[h][sig])
    complaint_p = {"significant": [0.5, 0.2, 0.1, 0.1, 0.1], "moderate": [0.3, 0.05, 0.3, 0.1, 0.25],
                   "none": [0.15, 0.02, 0.38, 0.1, 0.35]}[burden]
    complaint = str(rng.choice(COMPLAINTS, p=complaint_p))
    p_tested = 0.6 if complaint == "unstable_angina" else 0.9  # unstable angina often goes straight to CAG
    p_positive = {"significant": 0.85, "moderate": 0.35, "none": 0.12}[burden]
    noninvasive: tuple[str, ...] = ()
    if rng.random() < p_tested:
        target = _severity_order(significant or [l for l in lesions if l.percent >= 50])
        noninvasive = tuple(_draw_tests(rng, bool(rng.random() < p_positive), target[0] if target else None))
    return ClinicalFacts(age=age, sex=sex, risk_factors=risk_factors, history=history, complaint=complaint,
                         noninvasive=noninvasive, dominance=dominance, lesions=lesions)


# ----------------------------------------------------------------------------- rendering
def _en_join(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _terms(codes: Iterable[str], table: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """Japanese list joined with 、 and the English list joined with commas/and."""
    pairs = [table[c] for c in codes]
    return "、".join(p[0] for p in pairs), _en_join([p[1] for p in pairs])


def lesion_text(lesion: Lesion) -> tuple[str, str]:
    """'#6 90%狭窄' / '#6 90% stenosis'; 99 and 100 % are named (sub)total occlusions."""
    head = f"#{lesion.segment} {lesion.percent}%"
    if lesion.percent == 100:
        return f"{head}（完全閉塞）", f"{head} (total occlusion)"
    if lesion.percent == 99:
        return f"{head}（亜完全閉塞）", f"{head} (subtotal occlusion)"
    return f"{head}狭窄", f"{head} stenosis"


def _fill(pair: Pair, **kw: str) -> tuple[str, str]:
    return pair[0].format(**kw), pair[1].format(**kw)


def _pick(rng: np.random.Generator, templates: Sequence[Pair]) -> Pair:
    """One rng draw selects the same paraphrase index for both languages."""
    return templates[int(rng.integers(len(templates)))]


def _diagnosis(lesions: Sequence[Lesion]) -> tuple[str, str]:
    left_main, vessels = diseased_vessels(lesions)
    ja_v, en_v = "、".join(VESSEL_LABEL[v][0] for v in vessels), _en_join([VESSEL_LABEL[v][1] for v in vessels] or [""])
    n = len(vessels)
    if left_main:
        return (("左主幹部病変" + (f"（{n}枝病変合併）" if n else "")),
                "left main disease" + (f" with {NUMBER_WORD[n]}-vessel disease" if n else ""))
    if n:
        return f"{n}枝病変（{ja_v}）", f"{NUMBER_WORD[n]}-vessel disease ({en_v})"
    if any(l.percent >= 50 for l in lesions):
        return "中等度狭窄のみで有意狭窄なし", "moderate stenosis only, no significant stenosis"
    return "有意狭窄なし", "no significant coronary stenosis"


def _indication(facts: ClinicalFacts) -> tuple[str, str]:
    reasons = [] if facts.complaint == "screening" else [facts.complaint]
    if any(is_positive_finding(f) for f in facts.noninvasive):
        reasons.append("ischemia")
    if "prior_pci" in facts.history:
        reasons.append("prior_pci")
    return _terms(reasons[:2] or ["screening_risk" if facts.risk_factors else "screening"], INDICATION_TERM)


def _pre_procedure(facts: ClinicalFacts, rng: np.random.Generator) -> tuple[str, str]:
    sex_ja, sex_noun, sex_adj = SEX_TERM[facts.sex]
    art = "an" if str(facts.age).startswith("8") or facts.age in (11, 18) else "a"
    lines = [_fill(_pick(rng, INTRO_TEMPLATES), age=str(facts.age), sex_ja=sex_ja, sex_noun=sex_noun,
                   sex_adj=sex_adj, art=art, Art=art.capitalize())]
    if facts.complaint == "screening":
        lines.append(_pick(rng, SCREENING_TEMPLATES))
    else:
        ja, en = COMPLAINT_TERM[facts.complaint]
        lines.append(_fill(_pick(rng, COMPLAINT_TEMPLATES), ja=ja, en=en))
    for codes, table, with_items, without in (
            (facts.risk_factors, RISK_TERM, RISK_TEMPLATES, NO_RISK_TEMPLATES),
            (facts.history, HISTORY_TERM, HISTORY_TEMPLATES, NO_HISTORY_TEMPLATES),
            (facts.noninvasive, FINDING_TERM, NONINVASIVE_TEMPLATES, NO_NONINVASIVE_TEMPLATES)):
        if codes:
            ja, en = _terms(codes, table)
            lines.append(_fill(_pick(rng, with_items), ja=ja, en=en))
        else:
            lines.append(_pick(rng, without))
    ja, en = _indication(facts)
    lines.append(_fill(_pick(rng, INDICATION_TEMPLATES), ja=ja, en=en))
    return "\n".join(l[0] for l in lines), "\n".join(l[1] for l in lines)


def _summary(facts: ClinicalFacts, plan: str, culprit: str | None, rng: np.random.Generator) -> tuple[str, str]:
    dom_ja, dom_en = DOMINANCE_TERM[facts.dominance]
    lines = [_fill(_pick(rng, DOMINANCE_TEMPLATES), ja=dom_ja, en=dom_en, En=dom_en[0].upper() + dom_en[1:])]
    lesions = sort_lesions(facts.lesions)
    index = int(rng.integers(len(LESION_TEMPLATES)))
    if not lesions:
        lines.append(NO_LESION_TEMPLATES[index])
    elif index == 0:
        for vessel in ("rca", "lmt", "lad", "lcx"):
            texts = [lesion_text(l) for l in lesions if VESSEL_OF[l.segment] == vessel]
            if texts:
                lines.append(_fill(LESION_TEMPLATES[0], vessel_ja=VESSEL_LABEL[vessel][0],
                                   vessel_en=VESSEL_LABEL[vessel][1], ja="、".join(t[0] for t in texts),
                                   en=", ".join(t[1] for t in texts)))
    else:
        texts = [lesion_text(l) for l in lesions]
        lines.append(_fill(LESION_TEMPLATES[index], ja="、".join(t[0] for t in texts),
                           en=_en_join([t[1] for t in texts])))
    ja, en = _diagnosis(lesions)
    lines.append(_fill(_pick(rng, DIAGNOSIS_TEMPLATES), ja=ja, en=en))
    lines.append(_fill(_pick(rng, PLAN_TEMPLATES[plan]), seg=f"#{culprit}"))
    staged = [f"#{l.segment}" for l in _severity_order(lesions) if plan == "PCI" and is_significant(l)
              and l.segment != culprit]
    if staged:
        lines.append(_fill(_pick(rng, STAGED_TEMPLATES), ja="、".join(staged), en=_en_join(staged)))
    return "\n".join(l[0] for l in lines), "\n".join(l[1] for l in lines)


def make_reports(facts: ClinicalFacts, rng: np.random.Generator) -> dict[str, str]:
    """Pre-procedure report and diagnostic/treatment summary, Japanese and English, plus the plan."""
    plan, culprit = treatment_plan(facts.lesions)
    pre_ja, pre_en = _pre_procedure(facts, rng)
    sum_ja, sum_en = _summary(facts, plan, culprit, rng)
    return {"pre_procedure_report_ja": pre_ja, "pre_procedure_report_en": pre_en,
            "treatment_summary_ja": sum_ja, "treatment_summary_en": sum_en,
            "plan": plan, "culprit_segment": culprit or ""}
