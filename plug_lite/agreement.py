"""How far several judges agree: percent agreement, Cohen's kappa (two judges) and Fleiss' kappa
(two or more), over nominal labels. A library of :mod:`plug_lite.judge`; standard library only.

Every function takes the labels as ``{judge name: [label of item 1, label of item 2, ...]}``, all
lists the same length (the items every judge labelled).

* percent agreement: the share of items on which every judge gave the same label;
* Cohen's kappa (Cohen 1960): ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement of
  the two judges and ``p_e`` the agreement expected from each judge's own label shares;
* Fleiss' kappa (Fleiss 1971): ``(P - P_e) / (1 - P_e)`` with ``P`` the mean, over items, of the
  share of judge pairs that agree on the item, and ``P_e`` the sum of the squared overall label
  shares.

Degenerate cases are stated, not hidden: kappa is ``None`` ("undefined") when the expected
agreement is 1, i.e. every judge gave one and the same label to every item; a judge that always
gives one label while the other varies gets a kappa of exactly 0 (its agreement is all chance).
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations

__all__ = ["percent_agreement", "cohen_kappa", "fleiss_kappa", "agreement"]


def _check(labels: dict[str, list]) -> int:
    lengths = {len(v) for v in labels.values()}
    if len(lengths) > 1:
        raise ValueError(f"the judges labelled different numbers of items: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def percent_agreement(labels: dict[str, list]) -> float | None:
    """The share of items on which every judge gave the same label (None without items)."""
    n = _check(labels)
    if not n:
        return None
    cols = list(labels.values())
    return sum(len({c[i] for c in cols}) == 1 for i in range(n)) / n


def cohen_kappa(x: list, y: list) -> float | None:
    """Cohen's kappa of two judges' labels of the same items; None when undefined (no items, or
    both judges gave one and the same label throughout)."""
    n = _check({"x": x, "y": y})
    if not n:
        return None
    p_o = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[k] * cy[k] for k in cx) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(labels: dict[str, list]) -> float | None:
    """Fleiss' kappa of two or more judges' labels of the same items; None when undefined."""
    n = _check(labels)
    m = len(labels)
    if not n or m < 2:
        return None
    cols = list(labels.values())
    totals: Counter = Counter()
    p_items = 0.0
    for i in range(n):
        counts = Counter(c[i] for c in cols)
        totals.update(counts)
        p_items += (sum(v * v for v in counts.values()) - m) / (m * (m - 1))
    p_bar = p_items / n
    p_e = sum((v / (n * m)) ** 2 for v in totals.values())
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def agreement(labels: dict[str, list]) -> dict:
    """The agreement figures of a panel: ``n`` items, ``percent_agreement`` (all judges alike),
    ``kappa`` and ``kappa_kind`` (Cohen's for two judges, Fleiss' for more), and per pair of
    judges their percent agreement and Cohen's kappa."""
    n = _check(labels)
    names = list(labels)
    two = len(names) == 2
    return {
        "n": n,
        "percent_agreement": percent_agreement(labels),
        "kappa": cohen_kappa(labels[names[0]], labels[names[1]]) if two else fleiss_kappa(labels),
        "kappa_kind": "cohen" if two else "fleiss",
        "pairs": [{"judges": [p, q], "percent_agreement": percent_agreement({p: labels[p], q: labels[q]}),
                   "cohen_kappa": cohen_kappa(labels[p], labels[q])} for p, q in combinations(names, 2)],
    }
