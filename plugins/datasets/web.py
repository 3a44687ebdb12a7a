"""img2dataset output folders: the ``files`` layout (00000/000000000.jpg + .txt + .json) or the
``webdataset`` layout (00000.tar), with a ``00000.parquet`` beside each shard. Only samples whose
status is "success" are kept, with their captions; tar members are copied into the build folder
(the root stays untouched), so for very large tar sets point ``data.train`` at the shards instead."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Literal

import pydantic

import fuse

from .layout import IMAGE_EXT, RootBuilder, RootOptions, root_dir, write_splits


class Img2DatasetOptions(RootOptions):
    metadata: Literal["json", "parquet"] = pydantic.Field(
        "json", description="Where captions and status come from: each sample's .json sidecar, or each shard's "
                            ".parquet (needs pyarrow: pip install 'fuse-align[parquet]').")
    val_shards: int = pydantic.Field(0, ge=0, description="Hold out the last N shards as the val split.")


class Sidecar(fuse.foreign.Record):
    """A sample's .json side-car: img2dataset's download status and, if captions were kept, the caption."""

    status: str
    caption: str | None = None


def _parquet_rows(path: Path) -> dict[str, dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise fuse.DataError("img2dataset: --metadata parquet needs pyarrow: pip install 'fuse-align[parquet]', "
                             "or use --metadata json.") from None
    return {str(r["key"]): r for r in pq.read_table(path, columns=["key", "caption", "status"]).to_pylist()}


class Img2Dataset(RootBuilder):
    """An img2dataset output folder (files or webdataset layout): successful downloads and their captions."""

    modalities = ("image", "text")
    Options = Img2DatasetOptions
    foreign_files = (fuse.ForeignFile("0*/*.json", "json", Sidecar),)

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "img2dataset")
        shards = sorted(p for p in root.iterdir() if p.name[:5].isdigit()
                        and (p.is_dir() or p.suffix == ".tar"))
        if not shards:
            raise fuse.DataError(f"img2dataset: {root} holds no shards (00000/ folders or 00000.tar files); point "
                                 "--root at img2dataset's output_folder.")
        records, stats = [], {"success": 0, "other": 0}
        for shard in shards:
            meta = None
            if opts.metadata == "parquet":
                if not (root / f"{shard.stem}.parquet").is_file():
                    raise fuse.DataError(f"img2dataset: {root / (shard.stem + '.parquet')} not found; use "
                                         "--metadata json.")
                meta = _parquet_rows(root / f"{shard.stem}.parquet")
            members = self._tar_members(shard, out_dir) if shard.suffix == ".tar" else self._files(shard)
            for key, files in sorted(members.items()):
                image = next((files[e] for e in sorted(files) if e in IMAGE_EXT), None)
                info = meta.get(key) if meta is not None else self._sidecar(files)
                if image is None or info is None or info["status"] != "success":
                    stats["other"] += 1
                    continue
                caption = info["caption"] or (fuse.foreign.read_text(files[".txt"], "img2dataset", fuse.foreign.SMALL)
                                              .strip() if ".txt" in files else "")
                if not caption:
                    stats["other"] += 1
                    continue
                stats["success"] += 1
                # a copied tar member is named relative to the manifest: the build folder is renamed when published
                where = image.relative_to(out_dir) if image.is_relative_to(out_dir) else image
                records.append((shard.stem, {"id": key, "image": str(where), "text": caption}))
            if meta is not None:   # failed downloads appear only in the parquet
                stats["other"] += sum(1 for k, r in meta.items() if r["status"] != "success" and k not in members)
        print(f"img2dataset: {stats['success']} samples with an image and a caption, {stats['other']} without "
              "(failed downloads or no caption) left out")
        val = {s.stem for s in shards[len(shards) - opts.val_shards:]} if opts.val_shards else set()
        if val and len(val) == len(shards):
            raise fuse.DataError(f"img2dataset: --val-shards {opts.val_shards} leaves no training shard "
                                 f"({len(shards)} shards).")
        splits = {"train": [r for s, r in records if s not in val], "val": [r for s, r in records if s in val]}
        return write_splits(out_dir, splits, opts.limit, "img2dataset")

    @staticmethod
    def _files(folder: Path) -> dict[str, dict[str, Path]]:
        out: dict[str, dict[str, Path]] = {}
        for path in folder.iterdir():
            out.setdefault(path.stem, {})[path.suffix.lower()] = path
        return out

    @staticmethod
    def _tar_members(shard: Path, out_dir: Path) -> dict[str, dict[str, Path]]:
        """Copies a tar shard's members into the build folder (never into root) and groups them by key."""
        dest = out_dir / "media" / shard.stem
        dest.mkdir(parents=True, exist_ok=True)
        out: dict[str, dict[str, Path]] = {}
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    name = Path(member.name).name
                    if not member.isfile() or "." not in name:
                        continue
                    path = dest / name
                    path.write_bytes(tar.extractfile(member).read())
                    key, ext = name.split(".", 1)
                    out.setdefault(key, {})["." + ext.lower()] = path
        except tarfile.TarError as exc:
            raise fuse.DataError(f"img2dataset: {shard} is not a readable tar ({exc}).") from None
        return out

    @staticmethod
    def _sidecar(files: dict[str, Path]) -> dict | None:
        """The side-car's status and caption (typed, bounded, UTF-8), or None without one."""
        if ".json" not in files:
            return None
        path = files[".json"]
        data = fuse.foreign.read_json(path, "img2dataset", fuse.foreign.SMALL)
        return fuse.foreign.validate(Sidecar, data, path, "the side-car", "img2dataset").model_dump()
