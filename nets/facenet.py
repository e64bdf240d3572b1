"""The FaceNet network: a backbone, then pooling, dropout, a 128-d bottleneck and L2 normalisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nets.inception_resnetv1 import InceptionResnetV1
from nets.mobilenet import MobileNetV1

BACKBONES = {"mobilenet": MobileNetV1, "inception_resnetv1": InceptionResnetV1}


class FacenetNet(nn.Module):
    """FaceNet head on a MobileNetV1 or Inception-ResNet-V1 backbone.

    ``embed`` is the one embedding function (inference, evaluation and the ONNX file all run it).
    With ``num_classes`` the network also has a classifier for training: ``forward`` gives
    (embedding, class logits), the logits from ``classify``. Parameter names match the original
    repository's released weights, with or without the classifier.
    """

    def __init__(self, backbone: str = "mobilenet", dropout_keep_prob: float = 0.5,
                 embedding_size: int = 128, num_classes: int | None = None,
                 cosine_classifier: bool = False) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unsupported backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
        net = BACKBONES[backbone]()
        # The released weights name the backbone `backbone.model.*`: keep that nesting.
        self.backbone = nn.ModuleDict({"model": net})
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.Dropout = nn.Dropout(1 - dropout_keep_prob)
        self.Bottleneck = nn.Linear(net.out_channels, embedding_size, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_size, eps=1e-3, momentum=0.1)
        self.embedding_size, self.cosine_classifier = embedding_size, cosine_classifier
        self.classifier = nn.Linear(embedding_size, num_classes) if num_classes else None

    def embed(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The embedding (N, embedding_size) of images (N, 3, H, W), float32 even under autocast: L2-normalised,
        or with ``normalize=False`` the vector before normalisation, which the plain classifier reads.

        Only the backbone runs in the autocast dtype: the bottleneck, its BatchNorm statistics, the L2
        normalisation and the classifier cost almost nothing and are where bfloat16's 8-bit mantissa hurts.
        """
        x = self.avg(self.backbone["model"](x)).flatten(1)
        with torch.autocast(x.device.type, enabled=False):
            features = self.last_bn(self.Bottleneck(self.Dropout(x.float())))
            return F.normalize(features, p=2, dim=1) if normalize else features

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits of ``embed(x, normalize=False)``: the linear classifier or, with ``cosine_classifier``,
        the cosines between the normalised embedding and the normalised weight rows (for a margin softmax;
        the same parameters, so checkpoints keep one key layout)."""
        if self.classifier is None:
            raise ValueError("this network has no classifier: build it with num_classes to train it")
        with torch.autocast(features.device.type, enabled=False):
            if self.cosine_classifier:
                return F.linear(F.normalize(features, p=2, dim=1), F.normalize(self.classifier.weight, dim=1))
            return self.classifier(features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training step's outputs, (L2-normalised embedding, class logits), in one call so that
        DistributedDataParallel sees every parameter used."""
        features = self.embed(x, normalize=False)
        return F.normalize(features, p=2, dim=1), self.classify(features)
