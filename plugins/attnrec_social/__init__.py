"""attnrec's social plugin: LightGCN propagation plus attention over a listener's artists (item
space) and friends (social space), fused linearly, for music and social recommendation; Last.fm
and generic interactions + social-network data; explanations by friend and by artist; a
cold-user slice.

Everything registers through the hooks below; see ``docs/social.md``.
"""

from __future__ import annotations

from attnrec import hookimpl
from attnrec.hookspecs import Register


@hookimpl
def register_data(register: Register) -> None:
    from .data import LastFMSocialDataModule, SocialDataModule, SocialSampleDataModule

    for cls in (SocialDataModule, LastFMSocialDataModule, SocialSampleDataModule):
        register(cls)


@hookimpl
def register_encoders(register: Register) -> None:
    from .encoders import SocialAttentionEncoder

    register(SocialAttentionEncoder)


@hookimpl
def register_recommenders(register: Register) -> None:
    from .model import SocialRecommender

    register(SocialRecommender)
