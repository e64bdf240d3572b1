"""The FaceNet model: a backbone, then pooling, dropout, a 128-d bottleneck and L2 normalisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nets.inception_resnetv1 import InceptionResnetV1
from nets.mobilenet import MobileNetV1

BACKBONES = {"mobilenet": MobileNetV1, "inception_resnetv1": InceptionResnetV1}


class Facenet(nn.Module):
    """FaceNet head on a MobileNetV1 or Inception-ResNet-V1 backbone.

    In ``train`` mode the forward returns (L2-normalised embedding, class logits); the classifier
    reads the embedding before normalisation, or with ``cosine_classifier`` gives the cosines between
    the normalised embedding and its normalised weight rows (for a margin softmax; same parameters, so
    checkpoints keep one key layout). In ``predict`` mode it returns the embedding only.
    Parameter names match the original repository's released weights.
    """

    def __init__(self, backbone: str = "mobilenet", dropout_keep_prob: float = 0.5,
                 embedding_size: int = 128, num_classes: int | None = None, mode: str = "train",
                 cosine_classifier: bool = False) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unsupported backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
        if mode not in ("train", "predict"):
            raise ValueError(f"mode must be 'train' or 'predict', not {mode!r}")
        if mode == "train" and not num_classes:
            raise ValueError("train mode needs num_classes for the classifier")
        net = BACKBONES[backbone]()
        # The released weights name the backbone `backbone.model.*`: keep that nesting.
        self.backbone = nn.ModuleDict({"model": net})
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.Dropout = nn.Dropout(1 - dropout_keep_prob)
        self.Bottleneck = nn.Linear(net.out_channels, embedding_size, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_size, eps=1e-3, momentum=0.1)
        self.mode, self.cosine_classifier = mode, cosine_classifier
        if mode == "train":
            self.classifier = nn.Linear(embedding_size, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding before L2 normalisation, (N, embedding_size), in float32 even under autocast.

        Only the backbone runs in the autocast dtype: the bottleneck, its BatchNorm statistics, the L2
        normalisation and the classifier cost almost nothing and are where bfloat16's 8-bit mantissa hurts.
        """
        x = self.avg(self.backbone["model"](x)).flatten(1)
        with torch.autocast(x.device.type, enabled=False):
            return self.last_bn(self.Bottleneck(self.Dropout(x.float())))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embedding, whatever the mode."""
        return F.normalize(self.features(x), p=2, dim=1)

    def forward(self, x: torch.Tensor):
        features = self.features(x)
        with torch.autocast(features.device.type, enabled=False):
            embedding = F.normalize(features, p=2, dim=1)
            if self.mode == "predict":
                return embedding
            if self.cosine_classifier:
                return embedding, F.linear(embedding, F.normalize(self.classifier.weight, dim=1))
            return embedding, self.classifier(features)
