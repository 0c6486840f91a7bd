"""attnrec's video plugin: multimodal item encoding, cold start and watch-time-aware learning.

Registers :class:`VideoDataModule` and its loaders (:class:`KuaiRecDataModule`,
:class:`MicroLensDataModule`, the bundled :class:`VideoSampleDataModule`), the
:class:`MultimodalItemEncoder` and the :class:`VideoRecommender`. See ``docs/video.md``.
"""

from __future__ import annotations

from attnrec import hookimpl
from attnrec.hookspecs import Register

from .data import Relevance, VideoDataModule, WatchCollate, WatchLog
from .encoder import MultimodalItemEncoder
from .loaders import KuaiRecDataModule, MicroLensDataModule, VideoSampleDataModule, read_kuairec, read_microlens
from .model import VideoRecommender, WatchNDCG
from .sample import generate_videos

__all__ = [
    "KuaiRecDataModule", "MicroLensDataModule", "MultimodalItemEncoder", "Relevance", "VideoDataModule",
    "VideoRecommender", "VideoSampleDataModule", "WatchCollate", "WatchLog", "WatchNDCG", "generate_videos",
    "read_kuairec", "read_microlens",
]  # fmt: skip


@hookimpl
def register_data(register: Register) -> None:
    for cls in (VideoDataModule, VideoSampleDataModule, KuaiRecDataModule, MicroLensDataModule):
        register(cls)


@hookimpl
def register_encoders(register: Register) -> None:
    register(MultimodalItemEncoder)


@hookimpl
def register_recommenders(register: Register) -> None:
    register(VideoRecommender)
