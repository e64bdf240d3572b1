"""Build the training folder of the shipped weights: aligned CelebA subset + LFW people of chosen sets.

LFW's people.txt splits its 5,749 people into 10 disjoint sets; the official pairs of set k use only
people of set k. Training on the people of sets 1-7 leaves sets 8-10 as people never seen in training,
so eval_LFW.py --folds 8,9,10 gives an honest held-out accuracy. The folder is made of symbolic links
to the aligned images (nothing is copied), and to the sources' align_settings.json when they were all
aligned the same way, so that train.py records that alignment beside the weights (folders aligned two
ways are refused). Run from the repository root: python -m recipes.make_trainset
"""
#------- settings (edit here or override as --name value) -------
lfw_dir_path = "lfw"                           # aligned LFW (align_dataset.py output)
lfw_people_path = "model_data/lfw_people.txt"  # LFW's official people.txt (View 2, 10 sets)
lfw_sets = [1, 2, 3, 4, 5, 6, 7]               # sets whose people are used for training
extra_dirs = ["aligned/celeba"]                # further aligned folder-per-person datasets to include
output_dir = "datasets"
#------------------------------------------------------------------
import os

from utils.alignment import SETTINGS_FILE, folder_alignment
from utils.config import Int, List, OutputFolder, Text, configure, fail, print_settings, run_main, settings_of

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"lfw_dir_path": Text(alias="lfw_dir"), "lfw_people_path": Text(), "lfw_sets": List(Int(1, 10)),
         "extra_dirs": List(Text()), "output_dir": OutputFolder()}


def read_people_sets(path: str) -> list[list[str]]:
    """The people of each set of people.txt: a count of sets, then per set a count and `name n` lines."""
    with open(path, encoding="utf-8") as handle:
        tokens = [line.split() for line in handle if line.strip()]
    sets, i = [], 1
    for _ in range(int(tokens[0][0])):
        count = int(tokens[i][0])
        sets.append([t[0] for t in tokens[i + 1:i + 1 + count]])
        i += 1 + count
    return sets


def link(source: str, destination: str) -> None:
    if os.path.lexists(destination):
        if os.path.realpath(destination) != os.path.realpath(source):
            fail(f"{destination} exists and is not a link to {source}; remove {output_dir} first")
        return
    os.symlink(os.path.abspath(source), destination)


def shared_alignment(folders: list[str]) -> str | None:
    """The align_settings.json that ``folders`` share, or None when one has none."""
    found = {folder: folder_alignment(folder) for folder in folders}
    if None in found.values():
        return None
    if len(set(found.values())) > 1:
        fail(f"{', '.join(folders)} were aligned differently "
             f"({'; '.join(f'{f}: {a.describe()}' for f, a in found.items())}); align them the same way with "
             "align_dataset.py")
    return os.path.join(folders[0], SETTINGS_FILE)


def main() -> None:
    print_settings(settings_of(globals()))
    sources = [lfw_dir_path, *extra_dirs]
    for folder in sources:
        if not os.path.isdir(folder):
            fail(f"{folder} not found; align the raw images into it with align_dataset.py first")
    record = shared_alignment(sources)
    os.makedirs(output_dir, exist_ok=True)
    if record:
        link(record, os.path.join(output_dir, SETTINGS_FILE))
    sets = read_people_sets(lfw_people_path)
    people = [name for k in lfw_sets for name in sets[k - 1]]
    absent = [name for name in people if not os.path.isdir(os.path.join(lfw_dir_path, name))]
    for name in people:
        if name not in absent:
            link(os.path.join(lfw_dir_path, name), os.path.join(output_dir, name))
    extra = 0
    for folder in extra_dirs:
        for name in sorted(os.listdir(folder)):
            if os.path.isdir(os.path.join(folder, name)):
                link(os.path.join(folder, name), os.path.join(output_dir, name))
                extra += 1
    print(f"{output_dir}: {len(people) - len(absent)} LFW people of sets {lfw_sets} "
          f"({len(absent)} without any aligned image) + {extra} people from {', '.join(extra_dirs)}; "
          + (f"aligned as {record}" if record else "no alignment record (not all made by align_dataset.py)"))


if __name__ == "__main__":
    configure(globals())
    run_main(main)
