"""Audio sets: AudioCaps and Clotho (audio-caption pairs) and ESC-50 (labelled clips in five folds)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

import fuse

from .layout import (AUDIO_EXT, Missing, RootBuilder, RootOptions, find_file, index_media, interleave, media_path,
                     read_csv, root_dir, write_classes, write_splits)


class AudioCapsRow(fuse.foreign.Record):
    """A row of AudioCaps' {train,val,test}.csv."""

    audiocap_id: str
    youtube_id: str
    start_time: str
    caption: str


class ClothoRow(fuse.foreign.Record):
    """A row of clotho_captions_{development,validation,evaluation}.csv."""

    file_name: fuse.foreign.MediaPath
    caption_1: str
    caption_2: str
    caption_3: str
    caption_4: str
    caption_5: str


class Esc50Row(fuse.foreign.Record):
    """A row of ESC-50's meta/esc50.csv."""

    filename: fuse.foreign.MediaPath
    fold: int = pydantic.Field(ge=1, le=5)
    target: int
    category: str


class AudioCapsOptions(RootOptions):
    on_missing: Literal["error", "skip"] = pydantic.Field(
        "skip", description="Clips absent from the folder (common: YouTube videos disappear): leave them out and "
                            "count them (skip), or stop (error).")


class AudioCaps(RootBuilder):
    """AudioCaps from its train/val/test csv files and a folder of clips named by YouTube id."""

    modalities = ("audio", "text")
    Options = AudioCapsOptions
    foreign_files = (fuse.ForeignFile("train.csv", "csv", AudioCapsRow),)

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "audiocaps")
        media = index_media(root, AUDIO_EXT)
        missing = Missing("audiocaps", opts.on_missing, root)
        splits = {}
        for split in ("train", "val", "test"):
            csv_path = find_file(root, [f"{split}.csv", f"dataset/{split}.csv", f"csv/{split}.csv"], "audiocaps",
                                 f"{split}.csv", "Put AudioCaps' train.csv, val.csv and test.csv in the root.")
            rows = read_csv(csv_path, "audiocaps", AudioCapsRow)
            clips: dict[str, dict] = {}
            for row in rows:   # val and test list five captions per clip: one record per clip
                key = f"{row.youtube_id}_{row.start_time}"
                clips.setdefault(key, {"row": row, "text": []})["text"].append(row.caption.strip())
            records = []
            for key, clip in clips.items():
                path = self._locate(media, clip["row"])
                if missing.check(path, key):
                    records.append({"id": key, "audio": str(path), "text": clip["text"]})
            splits[split] = records
        missing.finish(out_dir)
        return write_splits(out_dir, splits, opts.limit, "audiocaps")

    @staticmethod
    def _locate(media: dict[str, Path], row: AudioCapsRow) -> Path | None:
        """The clip's file under the names downloaders use: YTID_START, YYTID_START, YTID, YYTID, audiocap_id."""
        ytid, start = row.youtube_id, row.start_time
        for stem in (f"{ytid}_{start}", f"Y{ytid}_{start}", f"{ytid}_{start}.000", ytid, f"Y{ytid}",
                     row.audiocap_id):
            if stem in media:
                return media[stem]
        return None


CLOTHO_SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}


class Clotho(RootBuilder):
    """Clotho (v2) from clotho_captions_{development,validation,evaluation}.csv and the matching audio folders."""

    modalities = ("audio", "text")
    Options = RootOptions
    foreign_files = (fuse.ForeignFile("clotho_captions_development.csv", "csv", ClothoRow),)

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "clotho")
        missing = Missing("clotho", opts.on_missing, root)
        splits = {}
        for split, name in CLOTHO_SPLITS.items():
            if split != "train" and not (root / f"clotho_captions_{name}.csv").is_file():
                continue   # Clotho v1 has no validation split; train is required below
            csv_path = find_file(root, [f"clotho_captions_{name}.csv"], "clotho", f"the {name} captions",
                                 "Put clotho_captions_*.csv in the root (as in the Zenodo download).")
            records = []
            for n, row in enumerate(read_csv(csv_path, "clotho", ClothoRow), start=2):
                path = media_path(root / name, row.file_name, f"{csv_path}:{n}", opts, "clotho")
                if missing.check(path, f"{name}/{row.file_name}"):
                    records.append({"id": Path(row.file_name).stem, "audio": str(path),
                                    "text": [getattr(row, f"caption_{i}").strip() for i in range(1, 6)]})
            splits[split] = records
        missing.finish(out_dir)
        return write_splits(out_dir, splits, opts.limit, "clotho")


class Esc50(RootBuilder):
    """ESC-50 from meta/esc50.csv and audio/: one split per fold (fold1..fold5) and all, labelled by category."""

    modalities = ("audio",)
    Options = RootOptions
    foreign_files = (fuse.ForeignFile("meta/esc50.csv", "csv", Esc50Row),)

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "esc50")
        csv_path = find_file(root, ["meta/esc50.csv"], "esc50", "meta/esc50.csv",
                             "Point --root at the ESC-50-master folder (it holds meta/ and audio/).")
        missing = Missing("esc50", opts.on_missing, root / "audio")
        splits: dict[str, list[dict]] = {f"fold{f}": [] for f in range(1, 6)}
        classes: dict[int, str] = {}
        for n, row in enumerate(read_csv(csv_path, "esc50", Esc50Row), start=2):
            if classes.setdefault(row.target, row.category) != row.category:
                raise fuse.DataError(f"esc50: {csv_path}:{n}: target {row.target} is named '{row.category}' here "
                                     f"and '{classes[row.target]}' earlier; one target has one name.")
            if (other := next((t for t, c in classes.items() if c == row.category and t != row.target), None)) is not None:
                raise fuse.DataError(f"esc50: {csv_path}:{n}: '{row.category}' names target {row.target} here and "
                                     f"target {other} earlier; one name has one target.")
            path = media_path(root / "audio", row.filename, f"{csv_path}:{n}", opts, "esc50")
            if missing.check(path, row.filename):
                splits[f"fold{row.fold}"].append({"id": Path(row.filename).stem, "audio": str(path),
                                                  "label": row.category, "fold": row.fold})
        missing.finish(out_dir)
        splits = {k: interleave(v) for k, v in splits.items()}
        splits["all"] = [r for f in range(1, 6) for r in splits[f"fold{f}"]]
        labels = [classes[t] for t in sorted(classes)]
        write_classes(out_dir, labels, [c.replace("_", " ") for c in labels])
        return write_splits(out_dir, splits, opts.limit, "esc50")
