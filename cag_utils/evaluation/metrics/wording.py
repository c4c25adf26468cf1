"""Vocabulary of coronary angiography summaries, Japanese and English, for ``findings.parse_summary``.

Every table is a regular expression over NFKC-normalised text (full-width ``＃６　９０％`` reads as
``#6 90%``), compiled case-insensitive; abbreviations carry letter boundaries so that ``LAD`` is not
read inside a word. Segments are AHA numbers (Austen et al., Circulation 1975;51(4 Suppl):5-40) as
``cag_utils.synth.reports.SEGMENTS`` writes them. The reading rules that use these tables are in the
docstring of ``cag_utils.evaluation.metrics.findings``.
"""
from __future__ import annotations

import re


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


_AB = r"(?<![A-Za-z])"   # letter boundaries around abbreviations
_AE = r"(?![A-Za-z])"

# ----------------------------------------------------------------------------- sites
_SEG = r"(4\s*-?\s*PD|4\s*-?\s*AV|1[0-5]|[1-35-9])(?![0-9A-Za-z])"   # a bare 4 or 16 is no AHA segment
# '#6', 'seg 6', 'segment 6', 'S6', a bare '4PD' / '4AV'; '#6-7' or '#6-#7' is a range.
NUMBERED = _rx(rf"(?:#\s*|{_AB}seg(?:ment)?s?\s*|{_AB}S(?=\d)|(?<![\d#])(?=4\s*-?\s*(?:PD|AV){_AE})){_SEG}"
               rf"(?:\s*[-~]\s*(?:#\s*|seg(?:ment)?\s*|S)?{_SEG})?")
# Main-vessel chains: a range inside one chain covers the segments between ('#1-3' is #1, #2, #3).
CHAINS: tuple[tuple[str, ...], ...] = (("1", "2", "3"), ("6", "7", "8"), ("11", "13"))

VESSEL_TERMS: dict[str, re.Pattern[str]] = {
    "rca": _rx(rf"{_AB}RCA{_AE}|right coronary(?: artery)?|右冠状?動脈(?!優位)"),
    "lmt": _rx(rf"{_AB}(?:LMT|LMCA|LM){_AE}|left main(?: trunk| coronary(?: artery)?)?|左主幹部?"),
    "lad": _rx(rf"{_AB}LAD{_AE}|left anterior descending(?: coronary)?(?: artery)?|左?前下行枝"),
    "lcx": _rx(rf"{_AB}L?Cx{_AE}|(?:left )?circumflex(?: coronary)?(?: artery)?|左?回旋枝"),
}
LOCATION_TERMS: dict[str, re.Pattern[str]] = {
    "proximal": _rx(rf"ostial|ostium|orifice|proximal(?:ly)?|{_AB}prox{_AE}|入口部|近位部?"),
    "mid": _rx(rf"{_AB}mid(?:dle)?{_AE}|中間部|中部|中位部"),
    "distal": _rx(r"distal(?:ly)?|遠位部?"),
}
SEGMENT_AT: dict[tuple[str, str], str] = {
    ("rca", "proximal"): "1", ("rca", "mid"): "2", ("rca", "distal"): "3",
    ("lmt", "proximal"): "5", ("lmt", "mid"): "5", ("lmt", "distal"): "5",
    ("lad", "proximal"): "6", ("lad", "mid"): "7", ("lad", "distal"): "8",
    ("lcx", "proximal"): "11", ("lcx", "mid"): "13", ("lcx", "distal"): "13"}
# A vessel named without location or branch reads as its proximal segment (see findings).
PROXIMAL_SEGMENT: dict[str, str] = {"rca": "1", "lmt": "5", "lad": "6", "lcx": "11"}
# Branches: (pattern, segment, (vessel named beside it, segment then)); 'PD of the LCx' is #15,
# 'PL of the RCA' is #4AV; a bare 'diagonal' is the first one.
BRANCH_TERMS: tuple[tuple[re.Pattern[str], str, tuple[str, str] | None], ...] = (
    (_rx(rf"second diagonal(?: branch)?|2nd diagonal(?: branch)?|第[二2]対角枝|{_AB}D2(?![\dA-Za-z])"), "10", None),
    (_rx(rf"first diagonal(?: branch)?|1st diagonal(?: branch)?|第[一1]対角枝|{_AB}D1(?![\dA-Za-z])"
         r"|diagonal(?: branch)?|対角枝"), "9", None),
    (_rx(rf"obtuse marginal(?: branch)?|marginal branch|{_AB}OM\d?(?![\dA-Za-z])|鈍角枝|鈍縁枝"), "12", None),
    (_rx(rf"(?:atrioventricular|{_AB}AVN?)(?: nod(?:e|al))? branch|房室(?:結節)?枝"), "4AV", None),
    (_rx(rf"postero-?lateral(?: branch)?|{_AB}PL\d?(?![\dA-Za-z])|後側壁?枝"), "14", ("rca", "4AV")),
    (_rx(r"posterior descending(?: branch| artery)?|(?<![A-Za-z\d])PDA?(?![A-Za-z])|後下行枝"), "4PD", ("lcx", "15")),
)
# Words between a location and its vessel or branch: 'proximal LAD', 'proximal portion of the LAD',
# 'mid-LAD' / 'LAD proximal', 'LAD近位部', 'RCAの近位部', 'RCAは入口部', 'LAD (proximal)'.
LOCATION_THEN_VESSEL = _rx(r"[\s-]*(?:(?:portion|segment|part|third)\s+of\s+)?(?:the\s+)?")
VESSEL_THEN_LOCATION = _rx(r"[\s:(（の-]*|\s*は\s*")
BRANCH_THEN_VESSEL = _rx(r"\s+(?:of|from)\s+(?:the\s+)?|[\s(（-]*")
# Between a named site and its number ('LAD #6', 'proximal LAD (#6)', '#6 (proximal LAD)'): the number wins.
NAMED_THEN_NUMBER = _rx(r"[\s:(（\[]*")
NUMBER_THEN_NAMED = _rx(r"[\s(（\[]*")
RANGE_JOIN = _rx(r"\s*(?:to|through|から|-|~)\s*")            # 'proximal to mid LAD', '近位部から中間部'
NUMBER_LIST_JOIN = _rx(r"[)）]?\s*(?:,|、|/|&|and|および|と)\s*(?:the\s+)?")    # '#6, #7 75%', '#6と#7'
NAMED_LIST_JOIN = _rx(r"[)）]?\s*(?:and|&|および|と)\s*(?:the\s+)?")  # 'the mid RCA and distal LAD'
# A bypass graft to a vessel ('SVG to OM', 'LITA-LAD') is no native segment.
GRAFT_BEFORE = _rx(r"(?:SVG|LITA|LIMA|RITA|RIMA|GEA|ITA|IMA|(?:vein|arterial|radial|bypass) graft|グラフト)"
                   r"\s*(?:-|to|→|~)?\s*(?:the\s+)?$")
ARTERY_WORDS: dict[str, re.Pattern[str]] = {   # named arteries that are no segment
    "LCA": _rx(rf"{_AB}LCA{_AE}|left coronary artery|左冠動脈(?!優位)"),
    "RCA": _rx(r"right coronary artery|右冠動脈(?!優位)")}

# ----------------------------------------------------------------------------- grades
PERCENT = re.compile(r"(?<![\d.])(\d{2,3})\s*%")
SUBTOTAL = _rx(r"sub-?total(?:ly)?(?:\s+occlu(?:sion|ded))?|亜完全閉塞|亜閉塞")
TOTAL = _rx(rf"(?:chronic\s+)?(?:total(?:ly)?|complete(?:ly)?)\s+occlu(?:sion|ded)|(?<![A-Za-z-])occlu(?:sion|ded)"
            rf"|{_AB}CTO{_AE}|完全閉塞|閉塞(?!性)")
# A grade word that only names the percent before it: '99% (subtotal occlusion)', '100%（急性閉塞）'.
WORD_AFTER_PERCENT = _rx(r"[\s(（]*(?:急性|慢性|acute|chronic)?\s*")
NEGATED_BEFORE = _rx(r"\b(?:no|not|without)\s+(?:\S+\s+){0,2}$")
NEGATED_AFTER = _rx(r"\s*(?:なし|無し|はな|を?認め(?:ず|ない)|は認め(?:ず|ない))")
# Percent values that are no stenosis: ejection fraction, HbA1c, saturation, residual or post-procedure.
NOT_A_GRADE = _rx(rf"(?:{_AB}(?:LV)?EF{_AE}|駆出率|HbA1c|{_AB}A1c|SpO2|SaO2|{_AB}%?FS{_AE}|{_AB}Hc?t{_AE}"
                  r"|residual(?:\s+stenosis)?|残存狭窄)[^%\d]{0,12}\d{1,3}(?:\.\d+)?\s*%|(?:→|->)\s*\d{1,3}\s*%")

# Between a grade and the site after it, the grade belongs to that site:
# '90% stenosis at/in/of (the) ...', '(50%) stenoses of the ...', '90%狭窄 (#6)'.
GRADE_THEN_SITE = _rx(r"[)）]?\s*(?:(?!with\b|and\b)[A-Za-z-]+\s+){0,2}"
                      r"(?:at|in|of|involving|within|on|from|affecting)\s+(?:the\s+|its\s+|a\s+)?"
                      r"|[)）]?\s*(?:狭窄|閉塞|病変|stenosis|lesion|narrowing|occlusion)?\s*[(（]\s*")
# Between a site and the grade after it, when that grade is the site's own ('#6 90%', '#6: 90%', '#6 (90%)', '#6に').
SITE_THEN_GRADE = _rx(r"[\s:=]*[(（]?\s*|\s*(?:に|は|が|で)\s*")
BACK_REACH, FORWARD_REACH = 30, 40   # characters a grade may stand from its site, in one sentence

# ----------------------------------------------------------------------------- plan, dominance, culprit
PLAN_TERMS: tuple[tuple[str, re.Pattern[str]], ...] = (   # in the order a text naming several is read
    ("CABG", _rx(r"CABG|OPCAB|coronary (?:artery )?bypass|bypass (?:graft(?:ing)?|surgery)"
                 r"|surgical revasculari[sz]ation|冠動脈バイパス|バイパス術|バイパス手術")),
    ("PCI", _rx(rf"PCI|PTCA|POBA|angioplasty|(?<!in-)(?<!in )stent(?:ing|ed|s)?{_AE}|{_AB}(?:DES|DCB){_AE}"
                r"|drug-coated balloon|atherectomy|rotablat\w*|ロータブレーター|ステント(?!内)"
                r"|経皮的冠動脈インターベンション|冠動脈形成術")),
    ("medical", _rx(r"medical (?:therapy|management|treatment)|medically|optimal medical|\bOMT\b|\bGDMT\b"
                    r"|conservative(?:ly)? (?:therapy|management|treatment)|pharmacologic(?:al)? therapy|drug therapy"
                    r"|anti-?anginal|calcium (?:channel )?(?:blocker|antagonist)|statins?\b|beta[- ]?blocker"
                    r"|薬物療法|薬物治療|内服加療|内服治療|内科的治療|保存的|Ca拮抗薬|スタチン|β遮断薬|硝酸薬")),
    ("follow_up", _rx(r"follow(?:ed)?[- ]up|observation|surveillance|経過観察|フォロー|経過をみる|経過を見る")),
)
CLAUSE_BREAK = re.compile(r"[,、:]")
# A plan word that is negated, deferred or past is no plan ('no PCI', 'PCI deferred', 'previous PCI',
# 'PCI見送り', 'PCIは行わず', 'CABGではなく', 'PCI歴', 'CABG術後').
PLAN_NEGATED_BEFORE = _rx(r"\b(?:no|not|without|declin\w*|refus\w*|defer\w*|previous(?:ly)?|prior|history of"
                          r"|instead of|rather than|patent|unsuitable|ineligible)\b\s+(?:\S+\s+){0,3}$"
                          r"|\b(?:after|post|s/p|status post)[\s-]*$|前回|既往|以前|過去")
PLAN_NEGATED_AFTER = _rx(r"\b(?:deferred|declined|refused|not|contraindicated|patent|unsuitable|ineligible)\b"
                         r"|\((?:19|20)\d\d\)|\b(?:in|on) (?:19|20)\d\d\b|見送|行わ(?:ず|ない)|施行せず|せず|しない"
                         r"|しなかった|適応(?:は|が)?な|適応外|困難|拒否|ではなく|開存|不要|不適|中止")
PLAN_PAST_AFTER = _rx(r"(?:施行|術)?後(?!日)|歴|の既往")   # right after the word: 'PCI後', 'CABG術後', 'PCI歴'
# 'PCI to / for / of the ...' names its target after the word; Japanese names it before ('#6に対しPCI').
PCI_TARGET_AFTER = _rx(r"\s*(?:[A-Za-z-]+\s+){0,2}?(?:to|for|of|on|in|at|into)\s")
CULPRIT = _rx(r"culprit|責任病変")

DOMINANCE: tuple[tuple[str, re.Pattern[str]], ...] = (   # the first that matches
    ("right", _rx(r"(?<!non)(?<!non-)(?:right|RCA)[\s-]*dominan(?:t|ce)|(?<!non)(?<!non-)dominant (?:right|RCA)"
                  r"|右冠動脈優位|右優位")),
    ("left", _rx(r"(?:left|LCx|circumflex)[\s-]*dominan(?:t|ce)|dominant (?:left|LCx|circumflex)"
                 r"|non-?dominant RCA|左冠動脈優位|左優位")),
    ("balanced", _rx(r"balanced|co-?dominan(?:t|ce)|バランス型|両側優位")),
)
