"""Score the distillation teacher itself on LFW pairs, on the same aligned crops the student sees.

    python -m recipes.teacher_lfw --lfw_dir_path lfw --folds 8,9,10

It shows how much the teacher loses on our crops (dlib's own pipeline starts from the raw photo), i.e.
the ceiling the student is pulled towards. Same protocol and code as eval_LFW.py (utils/verification.py).
"""
#------- settings (edit here or override as --name value) -------
lfw_dir_path = "lfw"                        # aligned LFW (align_dataset.py, crop mode)
lfw_pairs_path = "model_data/lfw_pair.txt"
folds = "8,9,10"
models_dir = ""                             # "" = the face_recognition_models package
margin_ratio = 0.2                          # margin / image_size of the aligned crops
num_workers = 2
#------------------------------------------------------------------
import numpy as np

from recipes.teacher_embeddings import describe_paths
from utils import verification
from utils.config import Int, Number, Text, configure, fail, print_settings, settings_of
from utils.lfw import PairsError, load_pairs, parse_folds

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"lfw_dir_path": Text(), "lfw_pairs_path": Text(), "folds": Text(), "models_dir": Text(),
         "margin_ratio": Number(0, 1, below=True), "num_workers": Int(1)}


def main() -> None:
    print_settings(settings_of(globals()))
    try:
        pairs = load_pairs(lfw_pairs_path, lfw_dir_path, parse_folds(folds))
    except (FileNotFoundError, PairsError) as err:
        fail(err)
    plain = describe_paths(pairs.paths, models_dir, margin_ratio, num_workers)
    distances = np.linalg.norm(plain[pairs.left] - plain[pairs.right], axis=1)
    result = verification.evaluate(distances, pairs.issame, pairs.fold)
    print(f"teacher on {len(distances)} pairs of folds {folds}: accuracy {result['accuracy_mean']:.5f} "
          f"+- {result['accuracy_std']:.5f}, VAL@FAR=1e-3 {result['val']:.5f}, AUC {result['auc']:.5f}")


if __name__ == "__main__":
    configure(globals())
    main()
