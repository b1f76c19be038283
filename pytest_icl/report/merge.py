"""One report from several store folders (the shards of a run): ``python -m pytest_icl merge DIR... -o OUT``.

Before anything is written the folders' manifests are checked, and a mixture is refused with
one :class:`UsageError`:

* every folder (and ``OUT``, if it is a store already) has the same compared library versions
  and the same settings (:func:`pytest_icl.report.store.differences`);
* the shards of one count ``N`` cut the same set of pairs (the same
  :func:`pytest_icl.sharding.fingerprint`; a folder's latest run of each count is the one
  compared, so a folder resumed after tasks were added is judged by what it ran last);
* every shard ``0/N … N−1/N`` of some count is there, or one folder ran unsharded; otherwise
  the missing shards are named, and ``partial=True`` (``--partial``) merges what is there.

Then every pair is put into ``OUT`` (a pair with a key already there replaces it, and the
summary names it) and ``OUT`` is rebuilt: results.json/csv, the samples files, index.html.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_icl.errors import UsageError
from pytest_icl.report.store import Store, differences


@dataclass
class MergeSummary:
    out: Path
    pairs: int  # in OUT after the merge
    added: int
    replaced: list[str]
    missing: list[str]  # shards no folder ran ("2/4"), with partial=True
    page: Path | None

    def lines(self) -> list[str]:
        lines = [f"merged into {self.out}: {self.pairs} pair(s), {self.added} added, {len(self.replaced)} replaced"]
        lines += [f"  replaced {name}" for name in self.replaced]
        if self.missing:
            lines.append(f"  partial: shard(s) {', '.join(self.missing)} missing")
        if self.page is not None:
            lines.append(f"report: {self.page}")
        return lines


def _runs(store: Store) -> list[dict]:
    return list(store.read_manifest().get("shards") or [])


def _count(run: dict) -> int | None:
    shard = run.get("shard")
    return None if shard is None else int(str(shard).split("/")[1])


def check_mixture(stores: Sequence[Store]) -> None:
    """:class:`UsageError` when the folders were made with different setups or cut different pair sets."""
    found = differences({str(store.folder): store.read_manifest() for store in stores})
    if found:
        raise UsageError(
            f"cannot merge these report folders: they were made with different setups ({'; '.join(found)}). The shards of "
            "one report must come from the same pytest-icl, library versions and settings: run the odd ones again with the "
            "others' setup (or into a folder of their own), and merge each setup into a report of its own."
        )
    latest: dict[int, dict[str, str]] = {}  # count -> folder -> fingerprint of its latest run of that count
    for store in stores:
        for run in _runs(store):
            if _count(run) is not None and run.get("pairs"):
                latest.setdefault(_count(run), {})[str(store.folder)] = run["pairs"]
    for count, prints in sorted(latest.items()):
        if len(set(prints.values())) > 1:
            listed = ", ".join(f"{folder} ({value})" for folder, value in prints.items())
            raise UsageError(
                f"cannot merge these report folders: their shards of {count} were cut from different sets of model × task pairs "
                f"({listed}), so pairs may be missing or doubled. Run every shard with the same command, models and task files, "
                "then merge again."
            )


def missing_shards(stores: Sequence[Store]) -> list[str]:
    """Shards that no folder ran, for the counts seen; empty when one count is complete or a run was unsharded."""
    runs = [run for store in stores for run in _runs(store)]
    if not runs or any(run.get("shard") is None for run in runs):
        return []
    ran: dict[int, set[int]] = {}
    for run in runs:
        ran.setdefault(_count(run), set()).add(int(str(run["shard"]).split("/")[0]))
    if any(len(indices) == count for count, indices in ran.items()):
        return []
    return [f"{index}/{count}" for count, indices in sorted(ran.items()) for index in range(count) if index not in indices]


def merge(sources: Sequence[str | Path], out: str | Path, *, partial: bool = False, html: bool = True) -> MergeSummary:
    """Check the folders, then put all their pairs into ``out`` and rebuild it."""
    if not sources:
        raise UsageError("merge needs at least one report folder to read: python -m pytest_icl merge DIR... -o OUT")
    unique = {Path(source).resolve(): Path(source) for source in sources}  # a folder named twice counts once
    stores = [Store.read(source) for source in unique.values()]
    out = Path(out)
    target_exists = (out / "manifest.json").exists()
    check_mixture([*stores, Store.read(out)] if target_exists else stores)
    missing = missing_shards(stores)
    if missing and not partial:
        raise UsageError(
            f"shard(s) {', '.join(missing)} are missing from the folders given, so the report would lack their pairs: add "
            "those shards' folders (or run them), or pass --partial to merge what is there."
        )
    # Every pair is read before anything is written: a damaged pair file stops the merge with OUT untouched.
    entries = [entry for store in stores if store.folder.resolve() != out.resolve() for entry in store.entries()]
    first = stores[0].read_manifest()
    target = Store.open(out, versions=first.get("versions") or {}, settings=first.get("settings") or {}, record=False)
    with target.locked():
        for entry in entries:
            target.put(entry.row, entry.samples_text())
        manifest = target.read_manifest()
        for run in (run for store in stores for run in _runs(store)):
            if run not in manifest["shards"]:
                manifest["shards"].append(run)
        target.write_manifest(manifest)
        page = target.rebuild(html=html)
    return MergeSummary(out, len(target.entries()), target.added, list(target.replaced), missing, page)
