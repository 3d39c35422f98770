"""Settings of the ``dpo`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="Strength of the constraint to the reference (inverse temperature).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid: DPO; ipo: squared loss to 1/(2 beta) on per-token mean log-ratios; "
                               "hinge: SLiC's max(0, 1 - beta h).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="sigmoid only: assumed rate of flipped labels "
                                                                   "(conservative DPO).")
    divergence: Literal["reverse_kl", "forward_kl", "js", "alpha"] = Field(
        "reverse_kl", description="f-divergence to the reference (Wang et al. 2023); reverse_kl is standard DPO.")
    alpha: float = Field(0.5, gt=0, lt=1, description="alpha of the alpha-divergence.")
    nll_weight: float = Field(0.0, ge=0, description="Weight of a negative log-likelihood term on the chosen "
                                                      "completions (per-token mean; RPO, Pang et al. 2024), which "
                                                      "keeps DPO from lowering both sides' likelihood.")
    length_groups: int = Field(
        0, ge=0, le=16, description="0: one pass over the batch as laid out, which a policy that packs padded "
                                    "batches (hf, tiny: policy.packing) scores without its padding; >= 1: interleaved "
                                    "pair rows (a pair's prompt runs once) in at most this many length groups without "
                                    "their all-padding columns, for policies that do not pack (the same log-probs to "
                                    "float rounding).")
