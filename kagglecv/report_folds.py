"""A rich table of fold balance from a folds report (the JSON written beside the folds CSV)."""

from __future__ import annotations

from rich.table import Table

MAX_CLASS_COLUMNS = 12


def folds_table(report: dict) -> Table:
    """Rows per fold: size, groups, and per-class counts (or their range when there are many classes)."""
    counts: dict[str, list[int]] = report["counts"]
    n_splits = report["n_splits"]
    title = (f"{report['effective_method']} k={n_splits} seed={report['seed']}: {report['rows']} rows, "
             f"largest label-rate deviation {report['max_rate_deviation']:.4f}")
    table = Table(title=title)
    table.add_column("fold", justify="right")
    table.add_column("rows", justify="right")
    if report.get("fold_groups"):
        table.add_column("groups", justify="right")
    show_classes = len(counts) <= MAX_CLASS_COLUMNS
    if show_classes:
        for name in counts:
            table.add_column(name, justify="right")
    else:
        table.add_column(f"per-class count (min-max over {len(counts)} classes)", justify="right")
    for fold in range(n_splits):
        cells = [str(fold), str(report["fold_sizes"][fold])]
        if report.get("fold_groups"):
            cells.append(str(report["fold_groups"][fold]))
        per_class = [values[fold] for values in counts.values()]
        cells += [str(value) for value in per_class] if show_classes else [f"{min(per_class)}-{max(per_class)}"]
        table.add_row(*cells)
    return table
