"""Open-set identification (1:N) on LFW people never seen in training: the README's honest numbers.

    python -m recipes.eval_identification --lfw_dir_path lfw

Protocol, on the people of people.txt sets 8-10 (the shipped weights were trained on sets 1-7):
gallery = the first image of each person with two or more images; known probes = their other
images; unknown probes = every image of the people with a single image. Reported: the rank-1 rate
of known probes (closed set), and at the threshold that travels with the weights and at the one that
gives at most ``wrong_name_target`` wrong names to unknown probes: the share of known probes named
correctly and the share of unknown probes given a name. That threshold is chosen on the unknown
probes themselves, so it is also cross-validated over the sets (chosen on two, scored on the third).

A second gallery with ``rule_gallery_images`` images per person compares the person scores of
``utils.gallery`` (a person's best image versus their mean similarity), which one image cannot tell apart.
Embeds the aligned crops as eval_LFW.py does (no second detection) and searches with utils.gallery.

Then predict.py's 1:N threshold (``--max_stranger_rate``, utils/open_set.py) on these galleries and on
random small ones (``small_galleries`` people x ``small_gallery_images`` images, ``repetitions`` each):
the share of strangers named against the one asked for, and the known people named correctly.

    python -m recipes.eval_identification --lfw_dir_path lfw --teacher True --num_workers 2

describes the same crops with the distillation teacher (dlib's ResNet, raw L2-normalised
descriptors) instead of the weights: the teacher's rows of the model card.
"""
#------- settings (edit here or override as --name value) -------
model_path = "model_data/facenet_mobilenet.pth"
backbone = None                             # None: from <model_path>.json, else read from the weights
input_shape = None                          # None: from <model_path without .pth>.json, else 160,160,3
letterbox_image = True
threshold = None                            # None: from <model_path without .pth>.json
lfw_dir_path = "lfw"                        # aligned LFW: <name>/<name>_0001.jpg ...
lfw_people_path = "model_data/lfw_people.txt"
lfw_sets = [8, 9, 10]                       # people.txt sets whose people are used
wrong_name_target = 0.01                    # share of unknown probes allowed a name at the chosen threshold
rule_gallery_images = 3                     # gallery images per person in the best-versus-mean comparison
batch_size = 256
num_workers = 1                             # image decoding processes
cuda = True
json_save_path = "logs/identification_eval.json"
teacher = False                             # True: dlib's ResNet (the distillation teacher), raw L2-normalised
                                            # descriptors of the same crops, in place of the weights
max_stranger_rates = [0.01, 0.05]           # shares of strangers named asked of predict.py's 1:N threshold
small_galleries = [5, 10, 20]               # people in the random small galleries ([]: none)
small_gallery_images = [1, 2, 3, None]      # gallery images per person; None: 1-3 at random
repetitions = 200                           # random small galleries per row
seed = 0
#------------------------------------------------------------------
import os
import time

import numpy as np
import torch

from facenet import DEFAULT_INPUT_SHAPE, FALLBACK_THRESHOLD
from nets.facenet import BACKBONES, FacenetNet
from recipes.make_trainset import read_people_sets
from recipes import open_set_measure
from recipes.teacher_embeddings import describe_paths
from utils.checkpoint import file_sha256, load_weights, model_settings, read_weights_info, weights_info_path, write_json
from utils.config import (Bool, Choice, Int, List, Number, Opt, OutputFile, Shape, Text, UserError, configure,
                          print_settings, run_main, settings_of)
from utils import gallery, open_set
from utils.image import ImageError, is_image_file
from utils.lfw import embed_paths
from utils.verification import far_threshold

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "model_path": Text(), "backbone": Opt(Choice(*BACKBONES)), "input_shape": Opt(Shape()), "letterbox_image": Bool(),
    "threshold": Opt(Number(0, 2, above=True)), "lfw_dir_path": Text(), "lfw_people_path": Text(),
    "lfw_sets": List(Int(1, 10)), "wrong_name_target": Number(0, 1, above=True), "rule_gallery_images": Int(1),
    "batch_size": Int(1), "num_workers": Int(0), "cuda": Bool(), "json_save_path": OutputFile(".json"),
    "teacher": Bool(), "max_stranger_rates": List(Number(0, 0.5, above=True)), "small_galleries": List(Int(2)),
    "small_gallery_images": List(Opt(Int(1))), "repetitions": Int(1), "seed": Int(0),
}


def person_images(lfw_dir: str, people: list[str]) -> dict[str, list[str]]:
    """Sorted image paths of each person's folder; a missing folder is an error naming it."""
    missing = [p for p in people if not os.path.isdir(os.path.join(lfw_dir, p))]
    if missing:
        raise UserError(f"{len(missing)} people of {lfw_people_path} have no folder in {lfw_dir} "
                                f"(first: {', '.join(missing[:3])}); align all of LFW into it with "
                                "align_dataset.py or set --lfw_dir_path")
    return {p: [os.path.join(lfw_dir, p, f) for f in sorted(os.listdir(os.path.join(lfw_dir, p)))
                if is_image_file(f)] for p in people}


def split(images: dict[str, list[str]], set_of: dict[str, int], per_person: int) -> dict[str, list]:
    """Gallery = the first ``per_person`` images of each person with more; known probes = their other
    images; unknown probes = every image of the people with a single image. Values are
    (path, person, set) triples."""
    parts = {"gallery": [], "known": [], "unknown": []}
    for person, paths in images.items():
        triples = [(path, person, set_of[person]) for path in paths]
        if len(paths) == 1:
            parts["unknown"] += triples
        elif len(paths) > per_person:
            parts["gallery"] += triples[:per_person]
            parts["known"] += triples[per_person:]
    return parts


def rates(correct: np.ndarray, known_distance: np.ndarray, unknown_distance: np.ndarray,
          threshold: float) -> dict[str, float]:
    """Open-set rates at ``threshold`` (a name is given below it)."""
    named = known_distance < threshold
    return {"threshold": threshold, "known_named_correctly": float(np.mean(correct & named)),
            "known_named_wrongly": float(np.mean(~correct & named)),
            "unknown_given_a_name": float(np.mean(unknown_distance < threshold))}


def evaluate(parts: dict[str, list], embedding_of: dict[str, np.ndarray], rule: str, shipped: float,
             target: float) -> dict:
    """Every number of one gallery and rule."""
    people = sorted({person for _, person, _ in parts["gallery"]})
    index = {person: i for i, person in enumerate(people)}
    search = gallery.PersonSearch(np.stack([embedding_of[p] for p, _, _ in parts["gallery"]]),
                                  np.array([index[person] for _, person, _ in parts["gallery"]]), people, rule)
    known_person, known_distance = search.nearest(np.stack([embedding_of[p] for p, _, _ in parts["known"]]))
    _, unknown_distance = search.nearest(np.stack([embedding_of[p] for p, _, _ in parts["unknown"]]))
    correct = known_person == np.array([index[person] for _, person, _ in parts["known"]])
    chosen = far_threshold(unknown_distance, target)
    known_set = np.array([s for _, _, s in parts["known"]])
    unknown_set = np.array([s for _, _, s in parts["unknown"]])
    folds = []
    for held_out in sorted(set(unknown_set)):
        fold_threshold = far_threshold(unknown_distance[unknown_set != held_out], target)
        k, u = known_set == held_out, unknown_set == held_out
        folds.append(rates(correct[k], known_distance[k], unknown_distance[u], fold_threshold))
    return {"rule": rule, "gallery_images": len(parts["gallery"]), "gallery_people": len(people),
            "known_probes": len(parts["known"]), "unknown_probes": len(parts["unknown"]),
            "rank1": float(np.mean(correct)),
            **({} if shipped is None else {"at_shipped_threshold": rates(correct, known_distance, unknown_distance,
                                                                         shipped)}),
            "at_chosen_threshold": rates(correct, known_distance, unknown_distance, chosen),
            "cross_validated": {key: float(np.mean([f[key] for f in folds])) for key in folds[0]}}


def show(title: str, result: dict) -> None:
    print(f"\n{title}: {result['gallery_images']} gallery images of {result['gallery_people']} people, "
          f"{result['known_probes']} known and {result['unknown_probes']} unknown probes, rule {result['rule']}")
    print(f"  rank-1 (closed set)                {result['rank1']:.4f}")
    for label, key in (("shipped threshold", "at_shipped_threshold"), ("chosen threshold", "at_chosen_threshold"),
                       ("cross-validated (mean of sets)", "cross_validated")):
        if key not in result:
            continue
        r = result[key]
        print(f"  {label:<31} {r['threshold']:.4f}: known named correctly {r['known_named_correctly']:.4f}, "
              f"wrongly {r['known_named_wrongly']:.4f}; unknown given a name {r['unknown_given_a_name']:.4f}")


def embed_with_weights(paths: list[str], settings: dict) -> tuple[np.ndarray, float, dict | None, dict]:
    """The weights' embeddings of ``paths``, their verification threshold, their impostor table (None
    when their JSON has none) and what made the embeddings (input size, weights, device)."""
    found = model_settings(model_path, backbone, input_shape, threshold, DEFAULT_INPUT_SHAPE)
    for message in found.messages:
        print(message)
    shape = found.input_shape
    shipped = FALLBACK_THRESHOLD if found.threshold is None else found.threshold
    print_settings({**settings, "backbone": found.backbone, "input_shape": shape})
    model = FacenetNet(found.backbone)
    load_weights(model, model_path, purpose="predict")
    device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
    try:
        embeddings = embed_paths(model.to(device), paths, shape, letterbox_image, batch_size, device,
                                 num_workers=num_workers)
    except ImageError as err:
        raise UserError(f"{err}; fix or replace that file in {lfw_dir_path}") from None
    table = read_weights_info(model_path).get(open_set.TABLE_KEY)
    try:
        table = None if table is None else open_set.check_table(table)
    except ValueError as err:
        raise UserError(f"{weights_info_path(model_path)}: {err}; run eval_LFW.py again") from None
    print(f"{len(paths)} images embedded at {shape[0]}x{shape[1]} on {device}; threshold {shipped:.4f}; "
          f"chosen threshold: at most {wrong_name_target:.1%} unknown named")
    return embeddings, shipped, table, {"input_shape": shape, "device": device,
                                        "checkpoint": {"path": model_path, "sha256": file_sha256(model_path)}}


def measure_open_set(images: dict[str, list[str]], set_of: dict[str, int], embeddings: np.ndarray, one: dict,
                     several: dict, embedding_of: dict[str, np.ndarray], json_table: dict | None) -> dict:
    """predict.py's 1:N threshold (utils/open_set.py) on the protocol's galleries and on random small
    galleries: the share of strangers named against the one asked for (recipes/open_set_measure.py)."""
    labels = np.array([person for person, person_paths in images.items() for _ in person_paths])
    sets = np.array([set_of[person] for person in labels])
    tables = open_set_measure.held_out_tables(labels, sets, embeddings)
    rule = gallery.DEFAULT_RULE
    result = {"one_image": open_set_measure.protocol_rows(one, embedding_of, rule, max_stranger_rates, tables,
                                                          json_table),
              f"{rule_gallery_images}_images": open_set_measure.protocol_rows(several, embedding_of, rule,
                                                                              max_stranger_rates, tables, json_table)}
    result["small_galleries"] = open_set_measure.small_gallery_rows(
        embeddings, labels, sets, rule, max_stranger_rates, small_galleries, small_gallery_images, repetitions, seed,
        tables, json_table)
    print("\nThreshold from the share of strangers allowed a name (predict.py --max_stranger_rate); rule "
          f"{rule}; thresholds are chosen without the probes they are scored on")
    open_set_measure.print_rows("One gallery image per person (protocol)", result["one_image"], max_stranger_rates, ())
    open_set_measure.print_rows(f"{rule_gallery_images} gallery images per person (protocol)",
                                result[f"{rule_gallery_images}_images"], max_stranger_rates, ())
    open_set_measure.print_rows(
        f"Small galleries: {repetitions} random galleries per row, people x images each (1-3: at random), of one "
        "LFW set each; strangers: one image of every other person of that set", result["small_galleries"],
        max_stranger_rates, ("people", "images"))
    return result


def main() -> None:
    """Embed the people of ``lfw_sets`` once and report every gallery and rule."""
    start = time.perf_counter()
    settings = settings_of(globals())
    try:
        sets = read_people_sets(lfw_people_path)
        set_of = {person: k for k in lfw_sets for person in sets[k - 1]}
    except (OSError, ValueError, IndexError) as err:
        raise UserError(f"{lfw_people_path}: no people.txt with sets {lfw_sets} ({err}); "
                        "set --lfw_people_path or --lfw_sets") from None
    images = person_images(lfw_dir_path, list(set_of))
    paths = [path for person_paths in images.values() for path in person_paths]
    if teacher:
        print_settings(settings)
        embeddings, shipped, json_table = describe_paths(paths, num_workers=num_workers), None, None
        embedder = {"teacher": "dlib_face_recognition_resnet_model_v1, raw L2-normalised descriptors", "device": "cpu"}
        print(f"{len(paths)} images of {len(images)} people of sets {lfw_sets} described by the teacher (dlib)")
    else:
        embeddings, shipped, json_table, embedder = embed_with_weights(paths, settings)
    embedding_of = dict(zip(paths, embeddings))

    one = split(images, set_of, 1)
    result = {"protocol": evaluate(one, embedding_of, gallery.DEFAULT_RULE, shipped, wrong_name_target)}
    show("One image per person", result["protocol"])
    several = split(images, set_of, rule_gallery_images)
    for rule in gallery.RULES:
        result[f"rule_{rule}"] = evaluate(several, embedding_of, rule, shipped, wrong_name_target)
        show(f"{rule_gallery_images} images per person", result[f"rule_{rule}"])
    result["open_set"] = measure_open_set(images, set_of, embeddings, one, several, embedding_of, json_table)
    write_json(json_save_path, {**result, **embedder, "wall_seconds": time.perf_counter() - start,
                                "settings": settings})
    print(f"\nSaved {json_save_path}")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
