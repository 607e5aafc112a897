# SPDX-License-Identifier: MIT
"""The stateless math behind onelip's layers and losses (the functional twins).

* :mod:`.activations`: :func:`group_sort`, :func:`full_sort`.
* :mod:`.orthogonal`: :func:`polar_bjorck`, :func:`bjorck_step`, :func:`bjorck1_linear`,
  :func:`cholesky_orthonormalize`, :func:`spectral_norm_exact`, :func:`power_iteration`,
  :func:`float32_cast_margin`, :func:`rounding_margin`, :func:`unit_norm_cast`.
* :mod:`.conv`: :func:`compose_kernels`, :func:`bcop_kernel`, :func:`circular_grid`,
  :func:`conv2d_symbol`, :func:`conv2d_operator_norm_bound`, :func:`conv2d_infinite_norm_bound`,
  :func:`symbol_power_iteration`.
* :mod:`.pooling`: :func:`scaled_avg_pool2d`, :func:`l2_norm_pool2d`,
  :func:`global_l2_norm_pool2d`, :func:`invertible_downsample`, :func:`avg_pool_norm`.
* :mod:`.residual`: :func:`sll_linear`, :func:`sll_conv2d`, their scalings and the rounding
  of their eval weights (:func:`sll_cast`).
* :mod:`.losses` (per-sample values reduced by ``reduction=``): :func:`kr_loss`,
  :func:`hinge_loss`, :func:`hkr_loss`, :func:`multiclass_kr_loss`,
  :func:`multiclass_hinge_loss`, :func:`multiclass_hkr_loss`, :func:`tau_cross_entropy_loss`,
  and the records' margin-aware ones: :func:`offset_cross_entropy_loss`, :func:`emma_loss`,
  :func:`logit_annealing_loss`.

This package only re-exports; each module imports nothing of onelip but the leaves
(``onelip._validation``) and its siblings.
"""

from __future__ import annotations

from onelip.functional.activations import (
    full_sort,
    group_sort,
)
from onelip.functional.bro import bro_factor, bro_symbol_factor
from onelip.functional.conv import (
    bcop_kernel,
    circular_grid,
    compose_kernels,
    conv2d_infinite_norm_bound,
    conv2d_operator_norm_bound,
    conv2d_polyphase,
    conv2d_symbol,
    dft_phases,
    square_adapter_in,
    symbol_power_iteration,
)
from onelip.functional.losses import (
    emma_loss,
    hinge_loss,
    hkr_loss,
    kr_loss,
    logit_annealing_loss,
    multiclass_hinge_loss,
    multiclass_hkr_loss,
    multiclass_kr_loss,
    offset_cross_entropy_loss,
    tau_cross_entropy_loss,
)
from onelip.functional.orthogonal import (
    bjorck1_linear,
    bjorck_step,
    cholesky_orthonormalize,
    float32_cast_margin,
    gram_row_sum_bound,
    polar_bjorck,
    power_iteration,
    rounding_margin,
    small_gram,
    spectral_norm_exact,
    unit_norm_cast,
)
from onelip.functional.pooling import (
    avg_pool_norm,
    global_l2_norm_pool2d,
    invertible_downsample,
    l2_norm_pool2d,
    scaled_avg_pool2d,
)
from onelip.functional.residual import (
    sll_cast,
    sll_conv2d,
    sll_conv_gram,
    sll_linear,
    sll_scaling,
)
from onelip.functional.soc import (
    exp_series_max,
    skew_conv_kernel,
    skew_conv_norm_bound,
    skew_exp_series,
)

__all__ = [
    "avg_pool_norm",
    "bcop_kernel",
    "bjorck1_linear",
    "bjorck_step",
    "bro_factor",
    "bro_symbol_factor",
    "cholesky_orthonormalize",
    "circular_grid",
    "compose_kernels",
    "conv2d_infinite_norm_bound",
    "conv2d_operator_norm_bound",
    "conv2d_polyphase",
    "conv2d_symbol",
    "dft_phases",
    "emma_loss",
    "exp_series_max",
    "float32_cast_margin",
    "full_sort",
    "global_l2_norm_pool2d",
    "gram_row_sum_bound",
    "group_sort",
    "hinge_loss",
    "hkr_loss",
    "invertible_downsample",
    "kr_loss",
    "l2_norm_pool2d",
    "logit_annealing_loss",
    "multiclass_hinge_loss",
    "multiclass_hkr_loss",
    "multiclass_kr_loss",
    "offset_cross_entropy_loss",
    "polar_bjorck",
    "power_iteration",
    "rounding_margin",
    "small_gram",
    "scaled_avg_pool2d",
    "skew_conv_kernel",
    "skew_conv_norm_bound",
    "skew_exp_series",
    "sll_cast",
    "sll_conv2d",
    "sll_conv_gram",
    "sll_linear",
    "sll_scaling",
    "spectral_norm_exact",
    "square_adapter_in",
    "unit_norm_cast",
    "symbol_power_iteration",
    "tau_cross_entropy_loss",
]
