"""`eval_mask_seen=False` reproduces RecBole's sequential full-sort protocol (seen items stay
in the ranking) and says so in the protocol."""

from __future__ import annotations

from attnrec.data import SyntheticDataModule


def test_unmasked_protocol_has_no_seen_and_names_itself() -> None:
    masked = SyntheticDataModule(num_users=60, num_items=150, max_len=10)
    unmasked = SyntheticDataModule(num_users=60, num_items=150, max_len=10, eval_mask_seen=False)
    assert "seen" in next(iter(masked.test_dataloader()))
    batch = next(iter(unmasked.test_dataloader()))
    assert "seen" not in batch and batch["targets"].shape[0] == 60
    assert "seen masked" in masked.protocol["candidates"]
    assert "NOT masked" in unmasked.protocol["candidates"]
