"""MSR-VTT from ``videodatainfo.json`` (train/validate/test, twenty captions per video) and, when the
JSFusion list is given, the 1k-A test set most papers report (1,000 videos, one caption each)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

import fuse

from .layout import (VIDEO_EXT, Missing, RootBuilder, RootOptions, find_file, index_media, read_csv, read_json,
                     root_dir, write_splits)

SPLITS = {"train": "train", "validate": "val", "test": "test"}


class Video(fuse.foreign.Record):
    """A video of videodatainfo.json."""

    video_id: str
    split: Literal["train", "validate", "test"]


class Sentence(fuse.foreign.Record):
    """A caption of videodatainfo.json."""

    video_id: str
    caption: str


class OneKRow(fuse.foreign.Record):
    """A row of the JSFusion 1k-A list, MSRVTT_JSFUSION_test.csv."""

    video_id: str
    sentence: str


class MsrvttOptions(RootOptions):
    test_1k: str | None = pydantic.Field(
        None, description="The JSFusion 1k-A list (MSRVTT_JSFUSION_test.csv: video_id, sentence); default: that "
                          "file in the root if present. Adds a test_1k split.")

    @pydantic.field_validator("test_1k")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return str(Path(v).expanduser().resolve()) if v else v


def _read_info(path: Path) -> dict:
    info = read_json(path, "msrvtt")
    if not isinstance(info, dict) or not {"videos", "sentences"} <= set(info):
        raise fuse.DataError(f"msrvtt: {path} has no 'videos' and 'sentences'; it is not MSR-VTT's videodatainfo.json.")
    return info


def _video_info(root: Path) -> tuple[Path, dict]:
    """videodatainfo.json (all 10,000 videos), or the split files as distributed: train_val_videodatainfo.json
    (7,010) with test_videodatainfo.json (the 2,990 test videos) beside it, read as one."""
    for name in ("videodatainfo.json", "annotation/videodatainfo.json"):
        if (root / name).is_file():
            return root / name, _read_info(root / name)
    train_val = find_file(root, ["train_val_videodatainfo.json", "annotation/train_val_videodatainfo.json"], "msrvtt",
                          "videodatainfo.json", "Put MSR-VTT's videodatainfo.json (or train_val_videodatainfo.json "
                          "and test_videodatainfo.json) in the root.")
    test = train_val.with_name("test_videodatainfo.json")
    if not test.is_file():
        raise fuse.DataError(f"msrvtt: {train_val} holds only the train and validate videos; put "
                             f"test_videodatainfo.json (the 2,990 test videos) beside it.")
    info, more = _read_info(train_val), _read_info(test)
    return train_val, {"videos": info["videos"] + more["videos"], "sentences": info["sentences"] + more["sentences"]}


class Msrvtt(RootBuilder):
    """MSR-VTT: train/val/test from videodatainfo.json, and test_1k (JSFusion 1k-A) from its csv."""

    modalities = ("video", "text")
    Options = MsrvttOptions
    foreign_files = (fuse.ForeignFile("videodatainfo.json", "json", Video, "videos"),
                     fuse.ForeignFile("videodatainfo.json", "json", Sentence, "sentences"),
                     fuse.ForeignFile("MSRVTT_JSFUSION_test.csv", "csv", OneKRow))

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "msrvtt")
        info_path, info = _video_info(root)
        captions: dict[str, list[str]] = {}
        for sentence in fuse.foreign.validate_all(Sentence, info["sentences"], info_path, "sentences", "msrvtt"):
            captions.setdefault(sentence.video_id, []).append(sentence.caption.strip())
        media = index_media(root, VIDEO_EXT)
        missing = Missing("msrvtt", opts.on_missing, root)
        splits: dict[str, list[dict]] = {s: [] for s in SPLITS.values()}
        for video in fuse.foreign.validate_all(Video, info["videos"], info_path, "videos", "msrvtt"):
            vid = video.video_id
            if vid in captions and missing.check(media.get(vid), vid):
                splits[SPLITS[video.split]].append({"id": vid, "video": str(media[vid]), "text": captions[vid]})
        one_k = Path(opts.test_1k).expanduser() if opts.test_1k else root / "MSRVTT_JSFUSION_test.csv"
        if opts.test_1k and not one_k.is_file():
            raise fuse.DataError(f"msrvtt: --test-1k {opts.test_1k} not found; give the JSFusion "
                                 "MSRVTT_JSFUSION_test.csv.")
        if one_k.is_file():
            splits["test_1k"] = []
            for row in read_csv(one_k, "msrvtt", OneKRow):
                if missing.check(media.get(row.video_id), row.video_id):
                    splits["test_1k"].append({"id": row.video_id, "video": str(media[row.video_id]),
                                              "text": [row.sentence.strip()]})
        missing.finish(out_dir)
        return write_splits(out_dir, splits, opts.limit, "msrvtt")
