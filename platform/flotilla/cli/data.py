"""``flotilla data generate | import | validate | show | report | audit | review``: a thin shell over the data layer.

``generate`` and ``import`` ingest through :mod:`flotilla.data.api` (own branch → validation gate →
merge into main); ``validate`` re-runs the gate on any ref (:func:`flotilla.data.ingest.validate_and_merge`,
``--merge`` to merge a fixed branch); ``show`` prints a dataset's manifest, or lists the datasets when
``--dataset`` is left out (:mod:`flotilla.data.store`), or with ``--grid`` writes a PNG grid of thumbnails;
``report`` writes the self-contained HTML page about a dataset (:mod:`flotilla.data.page`); ``review`` is an audit's
review loop in Label Studio (:mod:`flotilla.audit.reviewing`); ``audit`` audits a dataset with a trained
model (:func:`flotilla.audit.audit_dataset`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from flotilla.cli.common import friendly, parse_data
from flotilla.cli.output import flag, mode, print_json, print_table, with_output
from flotilla.data import FaceSpec, Shift
from flotilla.data.api import generate as generate_dataset
from flotilla.data.api import import_dataset
from flotilla.data.ingest import save_report_files, validate_and_merge
from flotilla.data.page import data_grid, data_report
from flotilla.data.report import Thresholds
from flotilla.data.store import list_datasets, read_manifest
from flotilla.data.synthetic import MAX_SEED
from flotilla.errors import DataValidationError, SpecError
from flotilla.hub import Hub
from flotilla.settings import DEFAULT_REPO
from flotilla.specs import load_thresholds

app = typer.Typer(help="Datasets in the hub: generate, import, validate, show, report, audit, review.", no_args_is_help=True)
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)

REPO = typer.Option(DEFAULT_REPO, "--repo", help="hub repository")
CREATE_REPO = flag(
    "--create-repo",
    help=f"create --repo if the hub does not have it (without it, a name not on the hub is an error; "
    f"the default repository {DEFAULT_REPO!r} is created on first use)",
)
REPORTS = typer.Option(Path("artifacts/reports"), "--report-dir", help="where the JSON report and PNG plot go")
# the validation gate's thresholds (docs/data.md, "The gate on small and real datasets"): a file, then flags on top
GATE_FILE = typer.Option(
    None, "--thresholds", help="YAML file of the gate's thresholds: the keys of an ingest job's 'thresholds:' block"
)
MIN_PER_GROUP = typer.Option(None, "--min-per-group", min=0, help="samples each group slice needs (min_group_count; default 20)")
ALLOW_UNDER = flag(
    "--allow-underrepresented",
    help="report under-represented groups as warnings, never errors (representativeness: warning); "
    "without it, groups too small to judge warn and the others fail",
)
MAX_MISSING = typer.Option(None, "--max-missing", min=0.0, max=1.0, help="largest null fraction of a label column")


def _thresholds(
    file: Path | None, min_per_group: int | None, allow_underrepresented: bool, max_missing: float | None
) -> Thresholds | None:
    """The gate's thresholds the options ask for; None (the defaults, or what the ref recorded) when none is given."""
    overrides: dict[str, object] = {}
    if min_per_group is not None:
        overrides["min_group_count"] = min_per_group
    if allow_underrepresented:
        overrides["representativeness"] = "warning"
    if max_missing is not None:
        overrides["max_missing"] = max_missing
    return load_thresholds(file, overrides) if file is not None or overrides else None


@contextmanager
def _bar(what: str, total: int | None):
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=err, transient=False) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _summarise(result) -> None:
    m = result.manifest
    console.print(
        f"[green]✓[/] dataset [bold]{result.dataset}[/]: {m.counts['samples']} samples "
        f"(train {m.counts['train']}, val {m.counts['val']}, test {m.counts['test']}) in {len(m.shards)} shards"
    )
    warned = len(result.report.warnings)
    note = f" with {warned} warning(s) (see the report)" if warned else ""
    console.print(f"[green]✓[/] validation passed{note}; merged into main as {result.merge_commit[:12]}")
    for kind, path in result.report_paths.items():
        console.print(f"  report ({kind}): {path}")


@app.command("generate")
@friendly
def generate(
    n: int = typer.Option(20_000, "--n", min=1, help="number of images"),
    name: str = typer.Option("synthetic", "--name", help="dataset name in the hub"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="generator seed (same seed, same images), 0 to 2**32 - 1"),
    size: int = typer.Option(64, help="image side in pixels"),
    lighting: float = typer.Option(0.0, help="shift: lighting (-1..1)"),
    age_mix: float = typer.Option(0.0, help="shift: blend ages towards older (0..1)"),
    occlusion: float = typer.Option(0.0, help="shift: probability of an unseen occluder (0..1)"),
    unlabelled: bool = flag(
        "--unlabelled", help="no labels (incoming data to predict on): every label null, 'labelled: false' in the manifest"
    ),
    repo: str = REPO,
    create_repo: bool = CREATE_REPO,
    report_dir: Path = REPORTS,
    thresholds_file: Path = GATE_FILE,
    min_per_group: int = MIN_PER_GROUP,
    allow_underrepresented: bool = ALLOW_UNDER,
    max_missing: float = MAX_MISSING,
) -> None:
    """Generate synthetic faces and ingest them (own branch → validation gate → merge into main)."""
    thresholds = _thresholds(thresholds_file, min_per_group, allow_underrepresented, max_missing)
    try:
        spec = FaceSpec(size=size, shift=Shift(lighting=lighting, age_mix=age_mix, occlusion=occlusion))
    except SpecError as exc:  # its problems name fields ("age_mix: ..."): name the options instead
        options = [f"--{field.replace('_', '-')}:{problem}" for field, _, problem in (p.partition(":") for p in exc.problems)]
        raise SpecError(
            "invalid generator option", options, hint="see 'flotilla data generate --help' for each option's range"
        ) from None
    with _bar(f"generating + uploading {name}", n) as advance:
        result = generate_dataset(
            Hub(),
            repo,
            name,
            n,
            seed=seed,
            spec=spec,
            report_dir=report_dir,
            thresholds=thresholds,
            on_progress=advance,
            labelled=not unlabelled,
            create_repo=create_repo,
        )
    _summarise(result)


@app.command("import")
@friendly
def import_(
    path: Path = typer.Argument(..., help="folder (utkface, folder) or CSV file (fer2013)"),
    fmt: str = typer.Option(..., "--format", help="utkface | fer2013 | folder"),
    name: str = typer.Option(..., "--name", help="dataset name in the hub"),
    labels: Path = typer.Option(None, "--labels", help="labels CSV (format 'folder')"),
    repo: str = REPO,
    create_repo: bool = CREATE_REPO,
    report_dir: Path = REPORTS,
    thresholds_file: Path = GATE_FILE,
    min_per_group: int = MIN_PER_GROUP,
    allow_underrepresented: bool = ALLOW_UNDER,
    max_missing: float = MAX_MISSING,
) -> None:
    """Import a dataset in a real-world format (own branch → validation gate → merge into main).

    The gate's thresholds: --min-per-group, --allow-underrepresented, --max-missing or a --thresholds
    file. A failed import lists the data's own problems first and keeps its ingest-* branch for fixing
    ('flotilla hub branches --prune' deletes it)."""
    thresholds = _thresholds(thresholds_file, min_per_group, allow_underrepresented, max_missing)
    with _bar(f"importing {name}", None) as advance:
        result, problems = import_dataset(
            Hub(),
            repo,
            name,
            fmt,
            path,
            labels_csv=labels,
            report_dir=report_dir,
            thresholds=thresholds,
            on_progress=advance,
            create_repo=create_repo,
        )
    for p in problems[:20]:
        err.print(f"[yellow]skipped[/] {p}")
    if len(problems) > 20:
        err.print(f"[yellow]... and {len(problems) - 20} more skipped entries[/]")
    _summarise(result)


@app.command("validate")
@friendly
def validate(
    dataset: str = typer.Option(..., "--dataset", help="dataset name"),
    ref: str = typer.Option("main", "--ref", help="branch, tag or commit to validate"),
    merge: bool = flag("--merge", help="if it passes, record the report and merge REF into main"),
    repo: str = REPO,
    report_dir: Path = REPORTS,
    thresholds_file: Path = GATE_FILE,
    min_per_group: int = MIN_PER_GROUP,
    allow_underrepresented: bool = ALLOW_UNDER,
    max_missing: float = MAX_MISSING,
) -> None:
    """Run the validation gate on a dataset at any ref (exit 1 if it fails).

    Without threshold options it judges by the thresholds REF's own report recorded (a failed import's
    branch: the ones it was imported with), else the defaults."""
    thresholds = _thresholds(thresholds_file, min_per_group, allow_underrepresented, max_missing)

    def show(report) -> None:
        report.render(console)
        paths = save_report_files(report, report_dir, dataset)
        console.print(f"report: {paths['json']}  plot: {paths['png']}")

    try:
        report, merged = validate_and_merge(Hub(), repo, ref, dataset, thresholds=thresholds, merge=merge)
    except DataValidationError as exc:  # with --merge a failure raises: show and save the report first
        if exc.report is not None:
            show(exc.report)
        raise
    show(report)
    if merged:
        console.print(f"[green]✓[/] merged {ref} into main as {merged[:12]}")
    if not report.passed:
        raise typer.Exit(1)


def _show_grid(repo: str, ref: str, dataset: str | None, out: Path | None, by: str, per_group: int, split: str | None) -> None:
    if not dataset:
        raise SpecError("--grid needs a dataset", hint="name it: flotilla data show <repo>/<ref>/<dataset> --grid")
    path = data_grid(Hub(), repo, ref, dataset, out=out or Path(f"{dataset}-grid.png"), by=by, per_group=per_group, split=split)
    console.print(f"[green]✓[/] grid of {dataset} at {ref} by {by}: {path}")


@app.command("show")
@with_output
@friendly
def show(
    address: str = typer.Argument(None, help="<repo>/<ref>/<dataset> (instead of --repo, --ref, --dataset)"),
    dataset: str = typer.Option(None, "--dataset", help="dataset name (omit to list datasets)"),
    ref: str = typer.Option("main", "--ref"),
    repo: str = REPO,
    grid: bool = flag("--grid", help="write a PNG grid of thumbnails instead of the manifest"),
    out: Path = typer.Option(None, "--out", help="the grid's PNG (default: <dataset>-grid.png)"),
    by: str = typer.Option("emotion", "--by", help="grid rows: a label column (emotion, gender, age = age band)"),
    per_group: int = typer.Option(8, "--per-group", min=1, help="thumbnails per grid row"),
    split: str = typer.Option(None, "--split", help="grid of one split only (train | val | test)"),
) -> None:
    """Show a dataset's manifest, counts and provenance at a ref (or list the datasets); --grid: a PNG of thumbnails."""
    if address:
        repo, ref, dataset = parse_data(address)
    if grid:
        _show_grid(repo, ref, dataset, out, by, per_group, split)
        return
    r = Hub().repo(repo)
    commit = r.resolve(ref)
    if not dataset:
        names = list_datasets(r, commit)
        if mode().json:
            print_json(names)
        for name in [] if mode().json else names:
            console.print(name, highlight=False)
        return
    m = read_manifest(r, commit, dataset)
    if mode().json:
        print_json({"repo": repo, "ref": ref, "commit": commit, "dataset": dataset, "manifest": json.loads(m.to_json())})
        return
    t = Table(title=f"lakefs://{repo}/{ref} ({commit[:12]}) — {dataset}")
    t.add_column("field")
    t.add_column("value")
    t.add_row("samples", str(m.counts["samples"]))
    for split in ("train", "val", "test"):
        t.add_row(f"  {split}", str(m.counts.get(split, 0)))
    for col, k in m.label_counts.items():
        t.add_row(f"labelled {col}", f"{k} ({k / max(1, m.counts['samples']):.0%})")
    t.add_row("label columns", m.label_schema.describe())  # what the dataset declares (docs/data.md, Label schemas)
    t.add_row("shards", f"{len(m.shards)} ({sum(s.bytes for s in m.shards) / 1e6:.1f} MB)")
    t.add_row("image formats", ", ".join(f"{k}: {v}" for k, v in m.image.get("formats", {}).items()))
    for key, value in m.provenance.items():
        t.add_row(f"provenance.{key}", str(value)[:100])
    print_table(t, console)


@app.command("report")
@friendly
def report(
    address: str = typer.Argument(..., help="<repo>/<ref>/<dataset>"),
    out: Path = typer.Option(None, "--out", help="the HTML page (default: artifacts/reports/<dataset>-<commit>.html)"),
    split: str = typer.Option(None, "--split", help="distributions and grids of one split only (train | val | test)"),
    per_group: int = typer.Option(6, "--per-group", min=1, help="thumbnails per class or band"),
) -> None:
    """Write one self-contained HTML page about a dataset (opens offline): counts, label distributions, sample
    grids, the validation result, the latest audit's worst examples and the commits that made the data."""
    repo, ref, dataset = parse_data(address)
    path = data_report(Hub(), repo, ref, dataset, out=out, split=split, per_group=per_group)
    console.print(f"[green]✓[/] report on {dataset} at {ref}: {path}")


@app.command("review")
@friendly
def review(
    audit: str = typer.Argument(..., help="the audit: its id, or its branch audit-<dataset>-<id>"),
    send: bool = flag("--send", help="send the flagged samples to Label Studio (flotilla label up first)"),
    annotate: bool = flag("--annotate", help="the scripted reviewer (synthetic data): decide from the truth"),
    receive: bool = flag("--receive", help="merge the reviewed decisions into --into, through the gate"),
    status: bool = flag("--status", help="where the review stands (the default)"),
    issues: str = typer.Option(None, "--issues", help="only these flags, comma-separated: label, label:<task>, outlier, ..."),
    limit: int = typer.Option(None, "--limit", min=1, help="at most this many samples, worst first"),
    into: str = typer.Option("main", "--into", help="the branch the reviewed change merges into"),
    repo: str = REPO,
) -> None:
    """Review an audit's flagged samples in Label Studio; accepted fixes and removals land as one gated commit."""
    from flotilla.audit import annotate_review, receive_review, review_status, send_review
    from flotilla.labelstudio import local_client

    if sum((send, annotate, receive, status)) > 1:
        raise SpecError("pass one of --send, --annotate, --receive, --status")
    say = err.print
    if send:
        wanted = [i.strip() for i in issues.split(",") if i.strip()] if issues else None
        state = send_review(Hub(), repo, audit, client=local_client(), issues=wanted, limit=limit, into=into, say=say)
        console.print(f"[green]✓[/] {len(state.sent)} flagged sample(s) in Label Studio project {state.project_id}")
    elif annotate:
        n = annotate_review(Hub(), repo, audit, client=local_client())
        console.print(f"[green]✓[/] {n} task(s) reviewed through Label Studio's API")
    elif receive:
        result = receive_review(Hub(), repo, audit, client=local_client(), say=say)
        console.print(f"[green]✓[/] {escape(result.summary())}")
    else:
        for key, value in review_status(Hub(), repo, audit, client=local_client()).items():
            console.print(f"{key}: {escape(str(value))}")


@app.command("audit")
@with_output
@friendly
def audit(
    data: str = typer.Argument(..., help="<repo>/<ref>/<dataset> to audit"),
    model: str = typer.Option(..., "--model", help="run id, <family>@<alias> or lakefs:// URI of the model"),
    split: str = typer.Option(None, "--split", help="train | val | test (default: every sample)"),
    method: str = typer.Option("probe", "--method", help="probe (cross-validated linear probe; any data) | model (unseen data)"),
    folds: int = typer.Option(5, "--folds", min=2, help="folds of the probe"),
    k: int = typer.Option(10, "--k", min=1, help="neighbours in the shared kNN graph"),
    task: list[str] = typer.Option(None, "--task", help="audit only this task (repeatable; default: the model's tasks)"),
    top: int = typer.Option(10, "--top", min=0, help="worst samples to list"),
    as_json: bool = flag("--json", help="print the summary as JSON"),
) -> None:
    """Audit a dataset with a trained model (cleanlab): label issues, outliers, duplicates; commit findings on audit-*."""
    from flotilla.audit import (  # Ray, scikit-learn and cleanlab: only when auditing (as `flotilla infer`)
        audit_dataset,
        weak_outputs,
    )

    repo, ref, dataset = parse_data(data)
    result = audit_dataset(
        Hub(), ref, dataset, model, repo=repo, split=split, tasks=task or None, method=method, folds=folds, k=k
    )
    s = result.summary
    if as_json:
        console.print_json(s.to_json())
        return
    t = Table(title=f"audit of {dataset}@{s.data_commit[:12]} by {escape(s.model_uri)} ({s.method}): {s.rows} samples")
    t.add_column("issue")
    t.add_column("flagged", justify="right")
    t.add_column("share", justify="right")
    for name, count in s.issues.items():
        t.add_row(name, str(count), f"{count / max(1, s.rows):.1%}")
    weak = []
    for name, d in s.dataset_issues.items():
        if name.startswith("outputs:"):
            t.add_row(f"{name} (out-of-sample {d['measure']})", "-", f"{d['score']:.3f} (chance {d['chance']:.3f})")
            if weak_outputs(d):
                weak.append(name.partition(":")[2])
            continue
        shown = f"score {d['score']:.3f}" if "score" in d else "not computed"
        t.add_row(f"{name} (dataset)", str(d.get("flagged", "-")), shown)
    console.print(t)
    for task_name in weak:
        console.print(
            f"[yellow]![/] the out-of-sample outputs for {task_name!r} are barely better than guessing: its label flags say more "
            "about the model than about the data (audit with a stronger model, or read them as a ranking)"
        )
    worst = result.worst(top)
    if worst:
        w = Table(title=f"worst {len(worst)} samples")
        for col in ("sample_id", "split", "issues", "worst_score"):
            w.add_column(col)
        for row in worst:
            w.add_row(row["sample_id"], row["split"], ", ".join(row["issues"]), f"{row['worst_score']:.3g}")
        console.print(w)
    console.print(f"[green]✓[/] findings committed on [bold]{result.branch}[/] ({result.commit[:12]}) under {s.path}")
