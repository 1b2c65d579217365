"""The rich tables the commands print: fold balance (from the folds report beside the folds CSV), a score, the
leaderboard, an ensemble, an error analysis; each from the typed record its stage returns."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from kagglecv.data.outcomes import Analysis, EnsembleResult, Entry, StackResult
from kagglecv.data.scoring import ScoreResult

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


def score_table(result: ScoreResult, title: str) -> Table:
    """Overall OOF score, per fold, mean +- std, then per class (at most MAX_CLASS_ROWS, worst first)."""
    table = Table(title=title)
    table.add_column("")
    table.add_column(result.metric, justify="right")
    table.add_row("OOF (all rows)", f"{result.overall:.5f}")
    for fold, value in result.per_fold.items():
        table.add_row(f"fold {fold}", f"{value:.5f}")
    if result.per_fold:
        table.add_row("folds mean ± std", f"{result.fold_mean:.5f} ± {result.fold_std:.5f}")
    per_class = sorted(((value, name) for name, value in result.per_class.items() if value == value))
    shown = per_class[:MAX_CLASS_ROWS]
    table.add_section()
    for value, name in shown:
        table.add_row(f"{result.per_class_kind} {name}", f"{value:.4f}")
    if len(per_class) > len(shown):
        table.add_row(f"({len(per_class) - len(shown)} more classes)", "")
    if result.classes_without_positives:
        table.add_row(f"no positives: {', '.join(result.classes_without_positives[:8])}", "left out")
    return table


MAX_CLASS_ROWS = 15


def format_params(count: int | None) -> str:
    """6570 -> 6.6k, 11_200_000 -> 11.2M; blank when unknown (an ensemble, a run from before 0.2)."""
    if not count:
        return ""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.1f}{suffix}"
    return str(count)


def leaderboard_table(entries: list[Entry]) -> Table:
    """The report's leaderboard, one block per competition, best first, with CV and fold spread (the changes
    between experiments are in report.md's journal)."""
    table = Table(title="leaderboard (OOF)")
    table.add_column("#", justify="right", min_width=1)
    table.add_column("experiment", no_wrap=True, min_width=14)
    table.add_column("backbone", no_wrap=True, min_width=9)
    table.add_column("params", justify="right", min_width=6)
    table.add_column("CV", justify="right", min_width=10)
    table.add_column("folds mean ± std", justify="right", min_width=9)
    competition = None
    rank = 0
    for entry in entries:
        name = entry.config["data"]["train_csv"]
        if name != competition:
            competition, rank = name, 0
            table.add_section()
        rank += 1
        table.add_row(str(rank), entry.name, entry.backbone, format_params(entry.params),
                      f"{entry.score.metric} {entry.score.overall:.4f}",
                      f"{entry.score.fold_mean:.4f} ± {entry.score.fold_std:.4f}")
    return table


def correlation_table(correlation: pd.DataFrame) -> Table:
    """The runs' OOF correlation matrix."""
    table = Table(title="OOF correlation")
    table.add_column("")
    for name in correlation.columns:
        table.add_column(name, justify="right", overflow="fold")
    for name, row in correlation.iterrows():
        table.add_row(name, *[f"{value:.3f}" for value in row])
    return table


def ensemble_table(result: EnsembleResult) -> Table:
    """Best single run, in-sample blend, nested (honest) blend; each run's weight and marginal gain."""
    table = _honest_scores(f"{result.name}: {result.method} on {result.metric}", result.metric, result.best_single, {
        "blend, fit and scored on all OOF (optimistic)": result.in_sample, "blend, nested CV (honest)": result.nested})
    table.add_section()
    for run, gain in result.marginal_gain.items():
        weight = result.weights.get(run)
        weight_text = f"weight {weight:.3f}, " if isinstance(weight, float) else ""
        table.add_row(f"{run}: {weight_text}marginal gain", f"{gain:+.5f}")
    return table


def _honest_scores(title: str, metric: str, best_single: tuple[str, float], scores: dict[str, float]) -> Table:
    """The best single run, then each fitted score (in-sample, nested) of an ensemble or a stack."""
    table = Table(title=title)
    table.add_column("")
    table.add_column(metric, justify="right")
    table.add_row(f"best single run ({best_single[0]})", f"{best_single[1]:.5f}")
    for name, value in scores.items():
        table.add_row(name, f"{value:.5f}")
    return table


def stack_table(result: StackResult, top: int = 10) -> Table:
    """Best single run, the stack in-sample (optimistic) and nested (honest), the columns it gained most from."""
    table = _honest_scores(f"{result.name}: {result.model} stack on {result.metric}", result.metric, result.best_single,
                           {"stack, fit and scored on all OOF (optimistic)": result.in_sample,
                            "stack, nested CV: fold k by the model fit without it (honest)": result.nested})
    if result.importance:
        table.add_section()
        total = sum(result.importance.values()) or 1.0
        for column, gain in list(result.importance.items())[:top]:
            table.add_row(f"gain: {column}", f"{gain / total:.1%}")
    return table


def inspect_tables(analysis: Analysis) -> list[Table]:
    """The worst OOF predictions, the most confused pairs and the duplicate conflicts of ``kagglecv inspect``."""
    tables = []
    worst = Table(title=f"{analysis.run}: worst out-of-fold predictions")
    if analysis.task == "multilabel":
        for column in ("id", "class", "error", "probability", "labels"):
            worst.add_column(column, justify="right" if column == "probability" else "left")
        for item in analysis.worst[:12]:
            worst.add_row(item["id"], item["class"], item["kind"], f"{item['probability']:.3f}", item["given"])
    elif analysis.task == "regression":
        for column in ("id", "true", "predicted", "error"):
            worst.add_column(column, justify="left" if column == "id" else "right")
        for item in analysis.worst[:12]:
            worst.add_row(item["id"], item["given"], item["predicted"], f"{item['error']:.4g}")
    else:
        for column in ("id", "true", "p(true)", "predicted", "p(predicted)"):
            worst.add_column(column, justify="right" if column.startswith("p(") else "left")
        for item in analysis.worst[:12]:
            worst.add_row(item["id"], item["given"], f"{item['p_given']:.3f}", item["predicted"],
                          f"{item['p_predicted']:.3f}")
    tables.append(worst)
    if analysis.confused_pairs:
        pairs = Table(title="most confused pairs (true -> predicted)")
        pairs.add_column("pair")
        pairs.add_column("errors", justify="right")
        pairs.add_column("each way")
        for pair in analysis.confused_pairs:
            ways = ", ".join(f"{d['true']} -> {d['predicted']}: {d['count']}" for d in pair["directions"])
            pairs.add_row(" / ".join(pair["classes"]), str(pair["count"]), ways)
        tables.append(pairs)
    duplicates = Table(title="near-duplicates with different labels",
                       caption=f"{len(analysis.duplicate_conflicts)} pairs; from {analysis.duplicates_checked}")
    duplicates.add_column("ids")
    duplicates.add_column("labels")
    duplicates.add_column("distance", justify="right")
    for conflict in analysis.duplicate_conflicts[:12]:
        duplicates.add_row(" ~ ".join(conflict["ids"]), " / ".join(conflict["labels"]), str(conflict["distance"]))
    tables.append(duplicates)
    return tables
