"""A report folder as a store of pairs: one file per result, added or replaced, never lost.

Layout of a store folder ``DIR``::

    DIR/manifest.json                 versions and settings every pair of the folder was made with
    DIR/pairs/<task>-<key id>.json    one result row per pair, with its key
    DIR/pairs/<task>-<key id>.samples.jsonl   that pair's samples (when it has some)
    DIR/results.json, results.csv, samples_*.jsonl, index.html, plots/   rebuilt from pairs/

A run opens the folder (:meth:`Store.open`), asks :meth:`Store.has` before computing a pair
(resume), :meth:`Store.put` s each finished pair and :meth:`Store.rebuild` s the files. Pair
files are replaced atomically, so an interrupted run keeps every pair it finished; every
read-modify-write holds a lock on ``DIR/.pytest-icl.lock`` (``filelock``: an OS lock, released
when its process dies), so runs writing into one folder (shards on a shared file system) keep
each other's pairs. Nothing is deleted: a pair is only ever replaced by a pair with the same key,
and :meth:`Store.put` says when that happened. The files outside ``pairs/`` are derived; a
rebuild rewrites them from every pair present and removes only derived files it wrote itself.

**The key** of a pair is :func:`pytest_icl.report.keys.key_of`'s (the module says what is in it
and what is left out, and why).

**The manifest** holds the versions of the libraries that can move the numbers
(:data:`COMPARED_VERSIONS`; pytest's cannot) and the run's settings as the caller gives them.
Opening a folder with different ones is refused: a folder holds one setup, so its report
compares like with like, and ``merge`` can trust it. It also lists the shards that wrote into the
folder (``merge`` checks that they are all there and cut the same set of pairs).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_icl.errors import UsageError
from pytest_icl.report import rows as report
from pytest_icl.report.keys import PairKey, describe, key_of

FORMAT = "pytest-icl-store"
SCHEMA = 1
MANIFEST = "manifest.json"
PAIRS = "pairs"
LOCK = ".pytest-icl.lock"
LOCK_TIMEOUT = 600.0  # seconds; a rebuild takes seconds, so a longer wait means a stuck writer

#: Libraries whose version can move a number; pytest's cannot, so a pytest upgrade keeps a folder usable.
COMPARED_VERSIONS = ("pytest-icl", "torch", "transformers", "lm_eval", "datasets")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists, keys strings), so a read-back manifest compares equal."""
    return json.loads(json.dumps(value, default=str))


def compared_versions(versions: dict[str, str] | None) -> dict[str, str]:
    return {name: versions[name] for name in COMPARED_VERSIONS if name in (versions or {})}


def differences(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """'torch 2.4 in a, 2.5 in b' per version or setting on which the named manifests disagree."""
    found = []
    for part in ("versions", "settings"):
        names = sorted({name for m in manifests.values() for name in (m.get(part) or {})})
        for name in names:
            values = {where: (m.get(part) or {}).get(name, "—") for where, m in manifests.items()}
            if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
                label = name if part == "versions" else f"setting {name}"
                found.append(f"{label} " + ", ".join(f"{json.dumps(v, default=str)} in {where}" for where, v in values.items()))
    return found


@dataclass(frozen=True)
class Entry:
    """One stored pair: its key, its row, and its samples file when it has one."""

    key: PairKey
    row: dict[str, Any]
    path: Path
    samples: Path | None

    def samples_text(self) -> str | None:
        return self.samples.read_text(encoding="utf-8") if self.samples is not None else None


@dataclass
class Store:
    """A store folder; see the module's notes. Make one with :meth:`open` (a run) or :meth:`read`."""

    folder: Path
    replaced: list[str] = field(default_factory=list)  # pairs this object replaced, as describe() names them
    added: int = 0
    adopted: int = 0  # rows taken over from a results.json written before folders were stores

    def __post_init__(self) -> None:
        from filelock import FileLock

        self.folder = Path(self.folder)
        self._lock = FileLock(str(self.folder / LOCK), timeout=LOCK_TIMEOUT)

    # ---- opening

    @classmethod
    def open(
        cls,
        folder: str | Path,
        *,
        versions: dict[str, str],
        settings: dict[str, Any],
        shard: str | None = None,
        pairs: str | None = None,
        record: bool = True,
    ) -> Store:
        """Open (or create) ``folder`` for a run; :class:`UsageError` when it holds another setup.

        ``versions``: :func:`pytest_icl.report.rows.library_versions`; ``settings``: the run-level
        settings (JSON-simple); ``shard`` (``"I/N"``) and ``pairs`` (the pair set's fingerprint,
        :func:`pytest_icl.sharding.fingerprint`) are recorded for ``merge`` (unless ``record`` is
        False: ``merge`` records its sources' runs instead of its own).
        """
        store = cls(Path(folder))
        try:
            store.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"{store.folder} cannot be a report folder ({error.strerror}); give a folder you can write to.") from None
        wanted = {"versions": compared_versions(versions), "settings": _plain(settings)}
        with store.locked():
            manifest = store.read_manifest()
            if manifest is None:
                manifest = {"format": FORMAT, "schema": SCHEMA, "created": _now(), **wanted, "shards": []}
                store._adopt_legacy(wanted["versions"])
            else:
                found = differences({f"{store.folder}": manifest, "this run": wanted})
                if found:
                    raise UsageError(
                        f"report folder {store.folder} holds results made with another setup ({'; '.join(found)}). A report folder "
                        "keeps one setup so that its pairs compare like with like and a resumed run never mixes in stale results: "
                        "point --icl-report at another folder, or run with the folder's versions and settings."
                    )
            run = {"shard": shard, "pairs": pairs}
            if record and run not in manifest["shards"]:
                manifest["shards"].append(run)
            manifest["updated"] = _now()
            store.write_manifest(manifest)
        return store

    @classmethod
    def read(cls, folder: str | Path) -> Store:
        """An existing store for reading (merge, diff, history); :class:`UsageError` when ``folder`` is none."""
        store = cls(Path(folder))
        if store.read_manifest() is None:
            raise UsageError(
                f"{store.folder} is not a pytest-icl report store (it has no {MANIFEST}); give a folder that a run with "
                "--icl-report wrote, or a shard's folder."
            )
        return store

    @contextmanager
    def locked(self):
        """Hold the folder's lock; :class:`UsageError` when another writer holds it too long."""
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise UsageError(
                f"another pytest-icl process has held the lock {self._lock.lock_file} for over {LOCK_TIMEOUT:.0f} s; "
                "wait for it to finish, or stop it if it hangs (the lock goes with its process)."
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.folder / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(
                f"{path} cannot be read ({error}); restore it from the folder's copy or another shard, or move the folder away."
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("schema"), int):
            raise UsageError(f"{path} is not a pytest-icl store manifest; move it away or point --icl-report at another folder.")
        if manifest["schema"] > SCHEMA:
            raise UsageError(
                f"{path} has store schema {manifest['schema']}; this pytest-icl reads ≤ {SCHEMA}: upgrade pytest-icl to use it."
            )
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        report.atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")

    def _adopt_legacy(self, versions: dict[str, str]) -> None:
        """Take over the rows of a results.json written before folders were stores, so no result is lost."""
        path = self.folder / "results.json"
        if not path.exists():
            return
        try:
            old = json.loads(path.read_text(encoding="utf-8"))["rows"]
            keys = [key_of(row) for row in old]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(
                f"{path} is a report this pytest-icl cannot take over ({type(error).__name__}: {error}); move it away, or point "
                "--icl-report at another folder."
            ) from None
        odd = [row for row in old if row.get("versions") and compared_versions(row["versions"]) != versions]
        if odd:
            found = differences({str(path): {"versions": compared_versions(odd[0]["versions"])}, "this run": {"versions": versions}})
            raise UsageError(
                f"report folder {self.folder} holds results made with other library versions ({'; '.join(found)}); its "
                "results.json would be mixed with this run's. Point --icl-report at another folder, or move the old report away."
            )
        for row, key in zip(old, keys):
            samples = self.folder / f"samples_{row['model_id']}_{row['task']}.jsonl"
            self._write_pair(key, row, samples.read_text(encoding="utf-8") if samples.exists() else None)
        self.adopted = len(old)

    # ---- pairs

    def _paths(self, key: PairKey) -> tuple[Path, Path]:
        return self.folder / PAIRS / f"{key.name}.json", self.folder / PAIRS / f"{key.name}.samples.jsonl"

    def has(self, key: PairKey) -> bool:
        """Whether the folder holds a result with this key (resume: then the pair is not computed again)."""
        return self._paths(key)[0].exists()

    def get(self, key: PairKey) -> dict[str, Any] | None:
        path = self._paths(key)[0]
        return self._entry(path).row if path.exists() else None

    def put(self, row: dict[str, Any], samples_text: str | None = None) -> bool:
        """Store a finished pair (its row with its property outcomes); True when it replaced one with its key.

        ``samples_text`` None keeps the samples stored under the key: under pytest-xdist the worker
        that ran the pair holds them and stores them with :meth:`put_samples`, the controller the row.
        """
        key = key_of(row)
        with self.locked():
            path = self._paths(key)[0]
            old = self._entry(path).row if path.exists() else None
            self._write_pair(key, row, samples_text)
        if old is not None:
            was = "" if describe(old) == describe(row) else f" (was {describe(old)})"
            self.replaced.append(describe(row) + was)
        else:
            self.added += 1
        return old is not None

    def put_samples(self, key: PairKey, samples_text: str) -> None:
        """Store a pair's samples ahead of its row (see :meth:`put`)."""
        report.atomic_write_text(self._paths(key)[1], samples_text)

    def _write_pair(self, key: PairKey, row: dict[str, Any], samples_text: str | None) -> None:
        path, samples = self._paths(key)
        # Samples first: a pair file on disk always has its samples next to it.
        if samples_text is not None:
            report.atomic_write_text(samples, samples_text)
        document = {"format": "pytest-icl-pair", "schema": SCHEMA, "stored_at": _now(), "key": key.as_dict(), "row": row}
        report.atomic_write_text(path, json.dumps(report._json_safe(document), indent=1) + "\n")

    def _entry(self, path: Path) -> Entry:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            row = document["row"]
            key = key_of(row)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(
                f"pair file {path} cannot be read ({type(error).__name__}: {error}); delete it to compute that pair again, "
                "or restore it from a copy."
            ) from None
        samples = path.with_name(f"{path.stem}.samples.jsonl")
        return Entry(key, row, path, samples if samples.exists() else None)

    def entries(self, model_order: tuple[str, ...] = ()) -> list[Entry]:
        """Every stored pair, ordered as the report shows them: ``model_order`` first, then model, task, key."""
        order = {name: index for index, name in enumerate(model_order)}
        found = [self._entry(path) for path in sorted((self.folder / PAIRS).glob("*.json")) if not path.name.startswith(".")]
        return sorted(
            found, key=lambda e: (order.get(e.row.get("model"), len(order)), str(e.row["model_id"]), str(e.row["task"]), e.key.id)
        )

    def rows(self, model_order: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return [entry.row for entry in self.entries(model_order)]

    # ---- the derived files

    def rebuild(
        self,
        *,
        html: bool = False,
        model_order: tuple[str, ...] = (),
        comparisons: dict[str, dict] | None = None,
        baseline: Path | None = None,
    ) -> Path | None:
        """Rewrite results.json/csv and the samples files from every pair (and index.html with ``html``).

        Returns the page's path when one was written. Writing the page draws every pair's plots,
        so a run rebuilds without it after each pair and with it once at the end.
        """
        with self.locked():
            entries = self.entries(model_order)
            if not entries:
                return None
            rows = [entry.row for entry in entries]
            report.write_results(self.folder, rows)
            names = display_names(entries)
            written = []
            for entry in entries:
                if entry.samples is not None:
                    target = self.folder / f"samples_{names[entry.key]}.jsonl"
                    _copy_if_changed(entry.samples, target)
                    written.append(target.name)
            manifest = self.read_manifest() or {}
            for stale in set(manifest.get("derived", [])) - set(written):
                (self.folder / stale).unlink(missing_ok=True)  # a derived file, rebuilt from pairs/: nothing is lost
            manifest["derived"] = sorted(written)
            self.write_manifest(manifest)
            if not html:
                return None
            from pytest_icl.report.html import write_html_report

            shown = [{**entry.row, "model_id": _display_model(entry, names)} for entry in entries]
            return write_html_report(self.folder, shown, comparisons=comparisons, baseline=baseline)


def display_names(entries: list[Entry]) -> dict[PairKey, str]:
    """``<model_id>_<task>`` per pair, with the key id added where several pairs share both.

    Results of one model and task under other settings (or a changed task file) stay in the store
    side by side; their samples files and plots need names of their own.
    """
    groups: dict[tuple[str, str], int] = {}
    for entry in entries:
        group = (str(entry.row["model_id"]), str(entry.row["task"]))
        groups[group] = groups.get(group, 0) + 1
    names = {}
    for entry in entries:
        model_id, task = str(entry.row["model_id"]), str(entry.row["task"])
        names[entry.key] = f"{model_id}_{task}" + (f"_{entry.key.id[:8]}" if groups[(model_id, task)] > 1 else "")
    return names


def _display_model(entry: Entry, names: dict[PairKey, str]) -> str:
    suffix = names[entry.key].removeprefix(f"{entry.row['model_id']}_{entry.row['task']}")
    return f"{entry.row['model_id']}{suffix.replace('_', '~')}"


def _copy_if_changed(source: Path, target: Path) -> None:
    """Copy a pair's samples to the folder's top level unless the copy there is already current."""
    try:
        if target.stat().st_size == source.stat().st_size and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            return
    except FileNotFoundError:
        pass
    report.atomic_write_bytes(target, source.read_bytes())


def rebuild(folder: str | Path, **options: Any) -> Path | None:
    """:meth:`Store.rebuild` of an existing store folder."""
    return Store.read(folder).rebuild(**options)
