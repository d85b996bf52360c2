"""The documentation's links: every relative link in a committed Markdown file reaches a file, and
every #anchor a heading of its page (GitHub's slugs), so that moving a page or renaming a section
cannot leave a reader at a dead end."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    """The committed pages: the top level's and those under the project's own folders (not .venv,
    runs/ or a demo folder a user's run wrote)."""
    folders = ("docs", "results", "experiments", "benchmarks", "configs", "byol", "tests")
    return sorted(
        [*ROOT.glob("*.md"), *(page for folder in folders for page in (ROOT / folder).rglob("*.md"))]
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    pages = markdown_files()
    assert ROOT / "README.md" in pages and ROOT / "docs" / "README.md" in pages
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def table_line(text: str, *marks: str) -> str:
    """The one line of the README's tables holding every mark (bold and the Unicode minus dropped)."""
    lines = [line.replace("**", "").replace("−", "-") for line in text.splitlines() if line.startswith("|")]
    found = [line for line in lines if all(mark in line for mark in marks)]
    assert len(found) == 1, (marks, found)
    return found[0]


def interval(row) -> str:
    return f"{row['diff_mean']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def test_the_readmes_answer_and_scoreboard_are_the_committed_files():
    """No README number that a committed file does not give: the answer table from the second long
    run's classifier_metrics.csv and per-image predictions (both intervals recomputed, the bootstrap
    included), the scoreboard row from the default pipeline's files."""
    import pandas as pd

    from byol.stats import paired_summary, summarize

    readme = (ROOT / "README.md").read_text()
    study = ROOT / "results" / "long_run_2"
    metrics = pd.read_csv(study / "classifier_metrics.csv")
    predictions = pd.read_csv(study / "classifier_predictions.csv")
    summary = summarize(metrics).set_index(["init", "mode", "n_labels"])
    paired = paired_summary(metrics, predictions).set_index(["n_labels", "mode"])
    for n, mode, words in [
        (250, "finetune", "full fine-tuning"),
        (250, "frozen", "frozen backbone"),
        (100, "finetune", "full fine-tuning"),
        (100, "frozen", "frozen backbone"),
        (25, "finetune", "full fine-tuning"),
        (25, "frozen", "frozen backbone"),
    ]:
        line = table_line(readme, f"| {n} | {words}")
        for init in ("random", "byol"):
            row = summary.loc[(init, mode, n)]
            assert f"{row['test_acc_mean']:.3f} ± {row['test_acc_std']:.3f}" in line, (init, line)
        row = paired.loc[(n, mode)]
        assert interval(row) in line, line
        assert f"| [{row['boot_low']:+.3f}, {row['boot_high']:+.3f}] | {row['verdict']} |" in line, line

    rows = re.findall(r"^\|.*\(results/(pipeline_default_\w+)/README\.md\).*$", readme, flags=re.M)
    assert "pipeline_default_bf16" in rows  # the scoreboard: one row per measured kind of CPU
    for name in rows:
        run = ROOT / "results" / name
        line = table_line(readme, f"results/{name}/")
        curve = pd.read_csv(run / "byol_metrics.csv")
        assert f"| {curve['step'].max():,} |" in line, name
        assert f"{curve['val_knn_k20'].iloc[0]:.3f} → {curve['val_knn_k20'].iloc[-1]:.3f}" in line, name
        paired = pd.read_csv(run / "classifier_paired.csv").set_index("mode")
        assert f"{interval(paired.loc['frozen'])} | {interval(paired.loc['finetune'])}" in line, name
