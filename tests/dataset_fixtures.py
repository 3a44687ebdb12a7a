"""Tiny copies of the standard datasets in their exact on-disk formats (field names, nesting, file
naming as distributed), with real media: coloured-shape PNG/JPEGs, sine-tone WAVs, a few-frame MP4.
Captions name the shapes so the tiny shapes model (conftest) can retrieve them."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

from conftest import COLORS, SHAPES, _draw

ITEMS = [(c, s) for c in COLORS for s in SHAPES]   # 12 (colour, shape) items


def captions(color: str, shape: str, n: int = 5) -> list[str]:
    forms = [f"a {color} {shape}", f"the {color} {shape} on white", f"{shape} coloured {color}",
             f"a {shape} that is {color}", f"white with a {color} {shape}"]
    return forms[:n]


def image(path: Path, i: int, jitter: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color, shape = ITEMS[i % len(ITEMS)]
    _draw(shape, COLORS[color], jitter=jitter).save(path)
    return path


def wav(path: Path, i: int) -> Path:
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t).astype("float32"), 16000)
    return path


def mp4(path: Path, i: int) -> Path:
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for f in range(4):
            frame = np.full((32, 32, 3), (40 * i + 10 * f) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def karpathy(dataset: str, split_sizes: dict[str, int], start_id: int = 1000) -> dict:
    """A Karpathy split file (dataset_coco.json / dataset_flickr30k.json) with its real fields."""
    images, sentid, n = [], 0, 0
    for split, count in split_sizes.items():
        for _ in range(count):
            color, shape = ITEMS[n % len(ITEMS)]
            sents = []
            for raw in captions(color, shape):
                sents.append({"tokens": raw.split(), "raw": raw, "imgid": n, "sentid": sentid})
                sentid += 1
            entry = {"sentids": [s["sentid"] for s in sents], "imgid": n, "sentences": sents, "split": split}
            if dataset == "coco":
                folder = "val2014" if split in ("val", "test", "restval") else "train2014"
                entry.update(filepath=folder, filename=f"COCO_{folder}_{start_id + n:012d}.jpg", cocoid=start_id + n)
            else:
                entry["filename"] = f"{start_id + n}.jpg"
            images.append(entry)
            n += 1
    return {"images": images, "dataset": dataset}


COCO_SPLITS = {"train": 3, "restval": 2, "val": 2, "test": 5}


def write_coco(root: Path, layout: str = "2014") -> Path:
    """Karpathy's json and its images, as 2014 files (COCO_val2014_<id>.jpg) or 2017 ones (<id>.jpg)."""
    data = karpathy("coco", COCO_SPLITS)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_coco.json").write_text(json.dumps(data))
    for n, im in enumerate(data["images"]):
        if layout == "2014":
            image(root / im["filepath"] / im["filename"], n)
        else:
            folder = "train2017" if im["split"] == "train" else "val2017"
            image(root / folder / f"{im['cocoid']:012d}.jpg", n)
    return root


def write_coco2017(root: Path) -> Path:
    """annotations/captions_{train,val}2017.json (COCO's own format) and train2017/, val2017/ images."""
    n = 0
    for split, count in (("train", 4), ("val", 3)):
        images, anns = [], []
        for _ in range(count):
            ident = 5000 + n
            name = f"{ident:012d}.jpg"
            image(root / f"{split}2017" / name, n)
            images.append({"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/{split}2017/"
                           f"{name}", "height": 64, "width": 64, "date_captured": "2013-11-14 11:18:45",
                           "flickr_url": "http://farm4.staticflickr.com/x.jpg", "id": ident})
            color, shape = ITEMS[n % len(ITEMS)]
            for raw in captions(color, shape):
                anns.append({"image_id": ident, "id": 100 * n + len(anns), "caption": raw + " "})
            n += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}2017.json").write_text(json.dumps({
            "info": {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017},
            "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "x"}],
            "images": images, "annotations": anns}))
    return root


def write_flickr(root: Path) -> Path:
    data = karpathy("flickr30k", {"train": 3, "val": 2, "test": 4}, start_id=200)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_flickr30k.json").write_text(json.dumps(data))
    for n, im in enumerate(data["images"]):
        image(root / "flickr30k-images" / im["filename"], n, jitter=2)
    return root


def write_audiocaps(root: Path, missing: int = 1) -> Path:
    """train.csv (one caption per clip), val.csv and test.csv (five per clip), clips named YTID_START.wav;
    the last ``missing`` test clips are absent, as YouTube-sourced sets always have some."""
    n = 0
    for split, clips, per in (("train", 3, 1), ("val", 2, 5), ("test", 3, 5)):
        rows = []
        for c in range(clips):
            ytid, start = f"yt{split}{c:04d}AB", 30 * c
            color, shape = ITEMS[n % len(ITEMS)]
            rows += [{"audiocap_id": str(1000 * n + k), "youtube_id": ytid, "start_time": str(start),
                      "caption": cap} for k, cap in enumerate(captions(color, shape, per))]
            if not (split == "test" and c >= clips - missing):
                wav(root / "audio" / split / f"{ytid}_{start}.wav", n)
            n += 1
        _csv(root / f"{split}.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    return root


def write_clotho(root: Path) -> Path:
    n = 0
    for name, count in (("development", 3), ("validation", 2), ("evaluation", 2)):
        rows = []
        for c in range(count):
            file_name = f"{name} clip {c}.wav"   # Clotho's names hold spaces
            wav(root / name / file_name, n)
            color, shape = ITEMS[n % len(ITEMS)]
            rows.append({"file_name": file_name, **{f"caption_{k + 1}": cap
                                                    for k, cap in enumerate(captions(color, shape))}})
            n += 1
        _csv(root / f"clotho_captions_{name}.csv", ["file_name"] + [f"caption_{k}" for k in range(1, 6)], rows)
    return root


def write_msrvtt(root: Path, with_1k: bool = True) -> Path:
    """videodatainfo.json (videos with split train/validate/test, twenty-ish sentences each) and the JSFusion csv."""
    videos, sentences, n = [], [], 0
    for split, count in (("train", 3), ("validate", 1), ("test", 2)):
        for _ in range(count):
            vid = f"video{n}"
            videos.append({"category": n % 20, "url": f"https://www.youtube.com/watch?v=x{n}", "video_id": vid,
                           "start time": 1.0, "end time": 11.0, "split": split, "id": n})
            color, shape = ITEMS[n % len(ITEMS)]
            for cap in captions(color, shape) * 4:
                sentences.append({"caption": cap, "video_id": vid, "sen_id": len(sentences)})
            mp4(root / ("TestVideo" if split == "test" else "TrainValVideo") / f"{vid}.mp4", n)
            n += 1
    (root / "videodatainfo.json").write_text(json.dumps({"info": {"year": "2016"}, "videos": videos,
                                                         "sentences": sentences}))
    if with_1k:
        _csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
             [{"key": f"ret{k}", "vid_key": f"msr{n - 2 + k}", "video_id": f"video{n - 2 + k}",
               "sentence": captions(*ITEMS[(n - 2 + k) % len(ITEMS)], 1)[0]} for k in range(2)])
    return root


ESC_CLASSES = ["dog", "rooster", "crackling_fire"]


def write_esc50(root: Path, per_fold: int = 1) -> Path:
    rows = []
    for fold in range(1, 6):
        for target, category in enumerate(ESC_CLASSES):
            for take in "AB"[:per_fold]:
                name = f"{fold}-{1000 + target}-{take}-{target}.wav"
                wav(root / "audio" / name, target)
                rows.append({"filename": name, "fold": str(fold), "target": str(target), "category": category,
                             "esc10": "True", "src_file": str(1000 + target), "take": take})
    _csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    return root


# tench, goldfish, golden retriever, toilet paper
IMAGENET_WNIDS = ["n01440764", "n01443537", "n02099601", "n15075141"]


def write_imagenet(root: Path, layout: str = "folders") -> Path:
    """ILSVRC2012 val: val/<wnid>/ILSVRC2012_val_<n>.JPEG, or a flat val/ labelled by the devkit
    (meta.mat + ground truth, folder or .tar.gz) or by Kaggle's LOC_val_solution.csv."""
    labels = [IMAGENET_WNIDS[n % 4] for n in range(8)]
    for n, wnid in enumerate(labels, start=1):
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        image(root / "val" / (wnid if layout == "folders" else "") / name, IMAGENET_WNIDS.index(wnid) * 3)
    if layout in ("devkit", "devkit-tar"):
        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        ids = {w: 400 + 7 * k for k, w in enumerate(reversed(IMAGENET_WNIDS))}   # IDs are not wnid order
        _meta_mat(data / "meta.mat", ids)
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in labels))
        if layout == "devkit-tar":
            with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
                tar.add(root / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
            import shutil

            shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    elif layout == "solution":
        _csv(root / "LOC_val_solution.csv", ["ImageId", "PredictionString"],
             [{"ImageId": f"ILSVRC2012_val_{n:08d}", "PredictionString": f"{w} 10 20 50 60 {w} 5 5 30 30"}
              for n, w in enumerate(labels, start=1)])
    return root


def _meta_mat(path: Path, ids: dict[str, int]) -> None:
    """The devkit's meta.mat: a 'synsets' struct array with its eight fields, leaves and one inner node."""
    import numpy as np
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(i, w, f"words of {w}, x", "a gloss", 0, np.zeros((1, 0)), 0, 1300) for w, i in ids.items()]
    rows.append((1001, "n00001740", "entity", "the root", 2, np.array([[400, 407]]), 18, 0))
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for k, row in enumerate(rows):
        for f, v in zip(fields, row):
            synsets[k, 0][f] = v
    savemat(path, {"synsets": synsets})


def write_class_folders(root: Path, splits: tuple[str, ...] = ()) -> Path:
    for split in splits or ("",):
        for n, (color, shape) in enumerate(ITEMS[:4]):
            for k in range(2):
                image(root / split / f"{color}_{shape}" / f"{k}.png", n, jitter=k)
    return root


def write_img2dataset_files(root: Path, tar: bool = False) -> Path:
    """img2dataset's output: per shard 00000/ (or 00000.tar) with KEY.jpg/.txt/.json, 00000.parquet and
    00000_stats.json; one failed download per shard appears only in the parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for shard in range(2):
        rows, folder = [], root / f"{shard:05d}"
        for i in range(3):
            key = f"{shard:05d}{i:04d}"
            color, shape = ITEMS[n % len(ITEMS)]
            caption = captions(color, shape, 1)[0]
            status = "success" if i < 2 else "failed_to_download"
            rows.append({"url": f"file:///src/{key}.png", "caption": caption, "key": key, "status": status,
                         "error_message": None if status == "success" else "404", "width": 64 if i < 2 else None,
                         "height": 64 if i < 2 else None})
            if status == "success":
                image(folder / f"{key}.jpg", n)
                (folder / f"{key}.txt").write_text(caption)
                (folder / f"{key}.json").write_text(json.dumps(rows[-1]))
            n += 1
        pq.write_table(pa.Table.from_pylist(rows), root / f"{shard:05d}.parquet")
        (root / f"{shard:05d}_stats.json").write_text(json.dumps({"count": 3, "successes": 2}))
        if tar:
            with tarfile.open(root / f"{shard:05d}.tar", "w") as t:
                for p in sorted(folder.iterdir()):
                    t.add(p, arcname=p.name)
            import shutil

            shutil.rmtree(folder)
    return root


def _csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: a build must leave it unchanged."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}
