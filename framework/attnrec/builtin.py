"""attnrec's own components, registered through the same hooks as any plugin's."""

from __future__ import annotations

from .hookspecs import Register, hookimpl


@hookimpl
def register_data(register: Register) -> None:
    from .data import (
        AmazonReviewsDataModule, InteractionDataModule, MovieLensDataModule, SyntheticDataModule,
        UserSequencesDataModule,
    )  # fmt: skip

    for cls in (
        InteractionDataModule, UserSequencesDataModule, SyntheticDataModule, MovieLensDataModule,
        AmazonReviewsDataModule,
    ):  # fmt: skip
        register(cls)


@hookimpl
def register_encoders(register: Register) -> None:
    from .encoders import IdItemEncoder, PoolingUserEncoder, TransformerUserEncoder

    for cls in (IdItemEncoder, TransformerUserEncoder, PoolingUserEncoder):
        register(cls)


@hookimpl
def register_attentions(register: Register) -> None:
    from .attention import AdditiveAttention, MultiHeadAttention, TargetAttention

    for cls in (MultiHeadAttention, AdditiveAttention, TargetAttention):
        register(cls)


@hookimpl
def register_scorers(register: Register) -> None:
    from .scorers import BilinearScorer, CosineScorer, DotScorer, MLPScorer

    for cls in (DotScorer, CosineScorer, BilinearScorer, MLPScorer):
        register(cls)


@hookimpl
def register_losses(register: Register) -> None:
    from .losses import BUILTIN_LOSSES

    for cls in BUILTIN_LOSSES:
        register(cls)


@hookimpl
def register_recommenders(register: Register) -> None:
    from .baselines import PopularityRecommender
    from .model import Recommender

    register(Recommender)
    register(PopularityRecommender)


@hookimpl
def register_metrics(register: Register) -> None:
    from .metrics import BUILTIN_METRICS

    for cls in BUILTIN_METRICS:
        register(cls)
