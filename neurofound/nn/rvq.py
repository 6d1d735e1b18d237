"""Residual vector quantisation with EMA codebooks, k-means init, dead-code restarts and the rotation trick.

The quantiser of BrainOmni's BrainTokenizer (spec §2.5; fixture README `brainomni_tokenizer` §5), after
Encodec's `core_vq` (Défossez et al., arXiv 2210.13438). Level l quantises the residual left by levels
0..l-1; the output is the sum of the chosen codewords:

* distance = `|r|^2 - 2 r.E + |E|^2` in fp32, index = argmin (ties -> first index), codeword = `embed[index]`,
  residual -= codeword (the straight-through / rotated value, detached), exactly as the reference;
* codebooks are buffers updated by exponential moving averages (decay 0.99, Laplace smoothing 1e-6), never
  by the optimiser; in eval the codewords are exact;
* k-means init (10 iterations on up to 4096 vectors) on the first TRAINING batch. Evaluating with
  uninitialised codebooks is a `DataError`; `kmeans_on_first_call=True` (implied by `reference_compat`)
  initialises on the first call in any mode, as the reference;
* dead-code restarts: a code whose EMA usage falls below a threshold is replaced by a random vector of the
  batch. The reference's threshold (2) is a count per step at its batch size (512 segments x 16 sources x
  5 windows x 8 steps = 327,680 vectors), so here it is scaled by (vectors in this step / 327,680): a small
  CPU batch would otherwise restart almost every code at every step;
* gradients reach the encoder through the rotation trick (Fifty et al., "Restructuring Vector Quantization
  with the Rotation Trick", arXiv 2410.06424) or plain straight-through;
* commitment loss per level = 0.25 * MSE(residual, stopgrad(codeword)); the caller reduces over levels
  (mean in the reference code, sum in the paper).

Under torch.distributed (when a process group is initialised) the EMA statistics are all-reduced and
re-initialised codebooks are broadcast from rank 0, so every rank keeps identical codebooks.

Keys: `layers.<l>._codebook.{inited, cluster_size, embed, embed_avg}` (+ `layers.<l>.project_in/out.*`
when `codebook_dim != dim`), the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurofound.errors import ConfigError, DataError

__all__ = [
    "EuclideanCodebook",
    "VectorQuantizer",
    "ResidualVQ",
    "RVQOutput",
    "rotate_to",
    "kmeans",
    "code_usage",
    "code_perplexity",
    "REFERENCE_VECTORS_PER_STEP",
]

# 512 segments x 16 sources x 5 windows x 8 latent steps: vectors per quantiser step in the reference's
# training (total batch 512 of 10-s segments, spec §2.6), the scale its dead-code threshold of 2 was set at.
REFERENCE_VECTORS_PER_STEP = 327_680
UNINITIALISED = "codebooks are not initialised: train the tokenizer first or load trained weights"


# ----------------------------------------------------------------------------------------------------------------
# torch.distributed helpers (no-ops in a single process)
# ----------------------------------------------------------------------------------------------------------------
def _distributed() -> bool:
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def _all_reduce_(*tensors: torch.Tensor) -> None:
    if _distributed():
        for t in tensors:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)


def _broadcast_(*tensors: torch.Tensor) -> None:
    if _distributed():
        for t in tensors:
            torch.distributed.broadcast(t, src=0)


# ----------------------------------------------------------------------------------------------------------------
# Functions
# ----------------------------------------------------------------------------------------------------------------
def rotate_to(src: torch.Tensor, tgt: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The rotation trick: a tensor with the value of `tgt` whose gradient reaches `src` through a rotation.

    Fifty et al. 2024 (arXiv 2410.06424): with u = src/|src| and q = tgt/|tgt|, the Householder-style
    rotation `R = I - 2 w w^T + 2 q u^T` (w = (u + q)/|u + q|) maps u onto q; the output is
    `(|tgt|/|src|) R src`, with R and the scale treated as constants. Its value is `tgt` (up to rounding),
    and the gradient with respect to `src` is `(|tgt|/|src|) R^T` applied to the incoming gradient, so the
    angle between a vector and its codeword is preserved in the backward pass, unlike straight-through.

    Args:
        src: `(..., D)` encoder outputs.
        tgt: `(..., D)` their codewords (receives no gradient).
        eps: floor of the norms; a src shorter than eps gets straight-through instead (it has no direction).

    Returns:
        `(..., D)`.
    """
    norm_src = src.norm(dim=-1, keepdim=True)
    norm_tgt = tgt.norm(dim=-1, keepdim=True)
    u = (src / norm_src.clamp(min=eps)).detach()
    q = (tgt / norm_tgt.clamp(min=eps)).detach()
    w = F.normalize(u + q, dim=-1, eps=eps).detach()
    rotated = src - 2 * (src * w).sum(-1, keepdim=True) * w + 2 * (src * u).sum(-1, keepdim=True) * q
    rotated = rotated * (norm_tgt / norm_src.clamp(min=eps)).detach()
    # A (near-)zero src has no direction to rotate (an exact residual of the previous level): the value
    # must still be tgt, so fall back to straight-through there.
    return torch.where(norm_src > eps, rotated, src + (tgt - src).detach())


def _squared_distances(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """`(n, D), (K, D) -> (n, K)` as `|x|^2 - 2 x.E + |E|^2` in fp32 (the reference's formula and order)."""
    x, e = x.float(), embed.t().float()
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ e + e.pow(2).sum(0, keepdim=True)


def _sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    """`num` rows of `samples`: without replacement when there are enough, with replacement otherwise."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


@torch.no_grad()
def kmeans(samples: torch.Tensor, num_clusters: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from `num_clusters` random samples; an empty cluster keeps its centre.

    With fewer samples than clusters, standard-normal vectors are appended first (the reference's way;
    those centres usually stay unused and the dead-code restarts replace them).

    Args:
        samples: `(n, D)`.
        num_clusters: K.
        iters: Lloyd iterations.

    Returns:
        centres `(K, D)` and cluster sizes `(K,)` float (an empty cluster counts 1, as the reference).
    """
    samples = samples.float()
    dim = samples.shape[1]
    if samples.shape[0] < num_clusters:
        noise = torch.randn(num_clusters - samples.shape[0], dim, device=samples.device)
        samples = torch.cat([samples, noise])
    centres = _sample_vectors(samples, num_clusters)
    bins = torch.ones(num_clusters, device=samples.device)
    for _ in range(iters):
        buckets = _squared_distances(samples, centres).argmin(-1)
        bins = torch.bincount(buckets, minlength=num_clusters).float()
        empty = bins == 0
        bins = bins.masked_fill(empty, 1.0)
        sums = torch.zeros_like(centres).index_add_(0, buckets, samples)
        centres = torch.where(empty[:, None], centres, sums / bins[:, None])
    return centres, bins


def code_usage(indices: torch.Tensor, codebook_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How often each code of each level was chosen.

    Args:
        indices: `(..., Q)` int codes.
        codebook_size: K.
        mask: `(...)` bool, True = count this vector (None: all).

    Returns:
        `(Q, K)` int64 counts.
    """
    flat = indices.reshape(-1, indices.shape[-1])
    if mask is not None:
        flat = flat[mask.reshape(-1)]
    return torch.stack([torch.bincount(flat[:, q], minlength=codebook_size) for q in range(flat.shape[1])])


def code_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """`(Q, K)` counts -> `(Q,)` perplexity exp(entropy) of each level's code distribution (K = all used evenly)."""
    p = counts.float() / counts.sum(-1, keepdim=True).clamp(min=1)
    entropy = -(p * p.clamp(min=1e-30).log()).sum(-1)
    return entropy.exp()


# ----------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------
class EuclideanCodebook(nn.Module):
    """One EMA codebook: `(n, D)` vectors -> codewords `(n, D)` and indices `(n,)`.

    Buffers (the reference's, in its order): `inited (1,)` float 0/1, `cluster_size (K,)` EMA usage
    counts, `embed (K, D)` the codewords, `embed_avg (K, D)` EMA sums of assigned vectors.

    Args:
        dim: D.
        codebook_size: K.
        kmeans_init: start empty and initialise by k-means (True, the reference); False starts from
            Kaiming-uniform codewords, already initialised.
        kmeans_iters: Lloyd iterations of the init.
        kmeans_sample: vectors the init samples from the batch.
        decay: EMA decay.
        epsilon: Laplace smoothing of the cluster sizes.
        dead_code_threshold: EMA usage below which a code is restarted, at the reference's batch size
            (0 disables restarts).
        dead_code_reference_vectors: the vectors per step that threshold refers to.
        kmeans_on_first_call: initialise on the first call in any mode (the reference) instead of
            raising in eval.
        reference_compat: the reference's EMA bookkeeping (see `forward`).
    """

    def __init__(self, dim: int, codebook_size: int, *, kmeans_init: bool = True, kmeans_iters: int = 10,
                 kmeans_sample: int = 4096, decay: float = 0.99, epsilon: float = 1e-6,
                 dead_code_threshold: float = 2.0, dead_code_reference_vectors: int = REFERENCE_VECTORS_PER_STEP,
                 kmeans_on_first_call: bool = False, reference_compat: bool = False):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ConfigError(f"a codebook needs codebook_size >= 1 and dim >= 1, got {codebook_size}, {dim}")
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        if dead_code_reference_vectors < 1:
            raise ConfigError(f"dead_code_reference_vectors must be >= 1, got {dead_code_reference_vectors}")
        self.dim, self.codebook_size = dim, codebook_size
        self.kmeans_iters, self.kmeans_sample = kmeans_iters, kmeans_sample
        self.decay, self.epsilon = decay, epsilon
        self.dead_code_threshold = float(dead_code_threshold)
        self.dead_code_reference_vectors = int(dead_code_reference_vectors)
        self.kmeans_on_first_call = kmeans_on_first_call or reference_compat
        self.reference_compat = reference_compat
        if kmeans_init:
            embed = torch.zeros(codebook_size, dim)
        else:
            embed = nn.init.kaiming_uniform_(torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    @property
    def is_initialised(self) -> bool:
        return bool(self.inited.item())

    # ---- pure lookups ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """`(n, D) -> (n,)` nearest codeword (fp32 distances, ties -> first index)."""
        return _squared_distances(x, self.embed).argmin(dim=-1)

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        """`(...) -> (..., D)` codewords."""
        return F.embedding(indices, self.embed)

    def check_initialised(self) -> None:
        if not self.is_initialised:
            raise DataError(UNINITIALISED)

    # ---- training state -------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_embed_(self, x: torch.Tensor) -> None:
        """k-means init from the (valid) vectors `x (n, D)`, then broadcast from rank 0."""
        if x.shape[0] == 0:
            raise DataError("the first training batch holds no valid vectors to initialise the codebooks from; "
                            "pass a batch with real (unmasked) windows")
        samples = _sample_vectors(x, self.kmeans_sample)
        embed, bins = kmeans(samples, self.codebook_size, self.kmeans_iters)
        self.embed.copy_(embed)
        if self.reference_compat:
            # Reference (fixture README step 3): cluster sizes are counts among the k-means samples and
            # embed_avg = embed, so the first EMA steps shrink the codewords by about the cluster size.
            self.cluster_size.copy_(bins)
            self.embed_avg.copy_(embed)
        else:
            # A consistent EMA state in per-step units: cluster sizes as counts among this step's vectors,
            # embed_avg = embed * cluster_size, so embed_avg / cluster_size starts at the k-means centres.
            n = torch.tensor(float(x.shape[0]), device=x.device)
            _all_reduce_(n)
            self.cluster_size.copy_(bins * (n / samples.shape[0]))
            self.embed_avg.copy_(embed * self.cluster_size[:, None])
        self.inited.fill_(1.0)
        _broadcast_(*self.buffers())

    def threshold(self, n_vectors: float) -> float:
        """The dead-code threshold for a step of `n_vectors` (all ranks): scaled, or the reference's as given."""
        if self.reference_compat:
            return self.dead_code_threshold
        return self.dead_code_threshold * n_vectors / self.dead_code_reference_vectors

    @torch.no_grad()
    def expire_codes_(self, x: torch.Tensor, threshold: float) -> torch.Tensor:
        """Replace codes whose EMA usage is below `threshold` by random vectors of `x (n, D)`.

        Returns:
            `(K,)` bool, the codes replaced.
        """
        dead = self.cluster_size < threshold
        if self.dead_code_threshold <= 0 or x.shape[0] == 0 or not bool(dead.any()):
            return torch.zeros_like(dead)
        samples = _sample_vectors(x.float(), self.codebook_size)
        self.embed.copy_(torch.where(dead[:, None], samples, self.embed))
        if not self.reference_compat:
            # Restart the EMA state too, at the threshold, so the next update keeps the new codeword
            # (the reference replaces `embed` only and its EMA update then overwrites it: README §5).
            self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, threshold),
                                                self.cluster_size))
            self.embed_avg.copy_(torch.where(dead[:, None], samples * threshold, self.embed_avg))
        _broadcast_(*self.buffers())
        return dead

    @torch.no_grad()
    def ema_update_(self, x: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA of usage counts and assigned sums, all-reduced over ranks; embed = embed_avg / smoothed counts."""
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed_avg).index_add_(0, indices, x.float())
        _all_reduce_(counts, sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.epsilon * self.codebook_size) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise `x (n, D)`; in training also update the codebook from the vectors where `mask (n,)` holds.

        Order, as the reference: init (if needed), nearest codes, codewords; then in training the EMA
        update. The default path restarts dead codes after the EMA update (so the restart survives);
        `reference_compat` restarts before it, as the reference, whose EMA normalisation then
        overwrites the replaced codewords (README §5).

        Returns:
            codewords `(n, D)` (exact; no gradient), indices `(n,)` int64.
        """
        valid = x if mask is None else x[mask]
        if not self.is_initialised:
            if self.training or self.kmeans_on_first_call:
                self.init_embed_(valid.detach())
            else:
                self.check_initialised()
        indices = self.quantize(x)
        codewords = self.dequantize(indices).to(x.dtype)
        if self.training:
            valid_idx = indices if mask is None else indices[mask]
            n = torch.tensor(float(valid.shape[0]), device=x.device)
            _all_reduce_(n)
            threshold = self.threshold(float(n))
            if self.reference_compat:
                self.expire_codes_(valid.detach(), threshold)
            self.ema_update_(valid.detach(), valid_idx)
            if not self.reference_compat:
                self.expire_codes_(valid.detach(), threshold)
        return codewords, indices


class VectorQuantizer(nn.Module):
    """One RVQ level: optional in/out projections around an `EuclideanCodebook` (key `_codebook`).

    Args:
        dim: width of the vectors.
        codebook_size: K.
        codebook_dim: width of the codewords; `project_in`/`project_out` are Linear layers when it
            differs from `dim`, Identity (no keys) otherwise.
        rotation_trick: gradients through the rotation trick (True) or straight-through (False).
        commitment_weight: beta of the commitment loss (0.25).
        **codebook_kwargs: for `EuclideanCodebook`.
    """

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int | None = None, *, rotation_trick: bool = True,
                 commitment_weight: float = 0.25, **codebook_kwargs):
        super().__init__()
        codebook_dim = dim if codebook_dim is None else codebook_dim
        self.rotation_trick = rotation_trick
        self.commitment_weight = commitment_weight
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self._codebook = EuclideanCodebook(codebook_dim, codebook_size, **codebook_kwargs)
        self.codebook_size = codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        return self._codebook.embed

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(n, dim)` -> quantised `(n, dim)`, indices `(n,)`, commitment loss `()` (over `mask`'s vectors)."""
        z = self.project_in(x)
        codewords, indices = self._codebook(z, mask)
        if self.training:
            out = rotate_to(z, codewords).to(z.dtype) if self.rotation_trick else z + (codewords - z).detach()
        else:
            out = codewords
        err = (z.float() - codewords.detach().float()).pow(2).mean(-1)
        loss = self.commitment_weight * (err.mean() if mask is None else _masked_mean(err, mask))
        return self.project_out(out), indices, loss

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self._codebook.dequantize(indices))


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


@dataclass
class RVQOutput:
    """quantized `(..., D)` (sum over levels), indices `(..., Q)` int64, commitment `(Q,)` per level."""

    quantized: torch.Tensor
    indices: torch.Tensor
    commitment: torch.Tensor


class ResidualVQ(nn.Module):
    """Residual VQ over `num_quantizers` levels: `(..., D)` -> `RVQOutput`.

    Args:
        dim: D.
        codebook_size: K per level.
        num_quantizers: Q.
        codebook_dim: codeword width (projections when it differs from D).
        rotation_trick: rotation-trick gradients (True) or straight-through.
        commitment_weight: 0.25.
        decay, epsilon, kmeans_init, kmeans_iters, kmeans_sample, dead_code_threshold,
        dead_code_reference_vectors: see `EuclideanCodebook`.
        kmeans_on_first_call: initialise on the first call in any mode (default: `reference_compat`).
        reference_compat: the reference's codebook bookkeeping (`EuclideanCodebook`).
    """

    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, codebook_dim: int | None = None, *,
                 rotation_trick: bool = True, commitment_weight: float = 0.25, decay: float = 0.99,
                 epsilon: float = 1e-6, kmeans_init: bool = True, kmeans_iters: int = 10, kmeans_sample: int = 4096,
                 dead_code_threshold: float = 2.0, dead_code_reference_vectors: int = REFERENCE_VECTORS_PER_STEP,
                 kmeans_on_first_call: bool | None = None, reference_compat: bool = False):
        super().__init__()
        if num_quantizers < 1:
            raise ConfigError(f"num_quantizers must be >= 1, got {num_quantizers}")
        first_call = reference_compat if kmeans_on_first_call is None else kmeans_on_first_call
        self.num_quantizers, self.codebook_size = num_quantizers, codebook_size
        self.layers = nn.ModuleList(
            VectorQuantizer(dim, codebook_size, codebook_dim, rotation_trick=rotation_trick,
                            commitment_weight=commitment_weight, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
                            kmeans_sample=kmeans_sample, decay=decay, epsilon=epsilon,
                            dead_code_threshold=dead_code_threshold,
                            dead_code_reference_vectors=dead_code_reference_vectors,
                            kmeans_on_first_call=first_call, reference_compat=reference_compat)
            for _ in range(num_quantizers))

    @property
    def codebooks(self) -> torch.Tensor:
        """`(Q, K, codebook_dim)`."""
        return torch.stack([layer.codebook for layer in self.layers])

    @property
    def is_initialised(self) -> bool:
        return all(layer._codebook.is_initialised for layer in self.layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> RVQOutput:
        """Quantise `x (..., D)`; `mask (...)` bool marks the vectors that count (EMA, k-means, commitment).

        In training the codebooks are updated (EMA, restarts) level by level, on each level's residual.
        """
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        m = None if mask is None else mask.reshape(-1)
        residual, total = flat, torch.zeros_like(flat)
        indices, losses = [], []
        for layer in self.layers:
            quantized, idx, loss = layer(residual, m)
            # The reference subtracts the (rotated / straight-through) value, detached, not the raw codeword.
            residual = residual - quantized.detach()
            total = total + quantized
            indices.append(idx)
            losses.append(loss)
        return RVQOutput(total.reshape(shape), torch.stack(indices, -1).reshape(*shape[:-1], len(self.layers)),
                         torch.stack(losses))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., D) -> (..., Q)` indices, without touching the codebooks (they must be initialised)."""
        shape = x.shape
        residual = x.reshape(-1, shape[-1])
        out = []
        for layer in self.layers:
            layer._codebook.check_initialised()
            idx = layer._codebook.quantize(layer.project_in(residual))
            residual = residual - layer.decode(idx)
            out.append(idx)
        return torch.stack(out, -1).reshape(*shape[:-1], len(self.layers))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """`(..., Q)` indices -> `(..., D)` sum of the codewords."""
        if indices.shape[-1] != len(self.layers):
            raise DataError(f"codes have {indices.shape[-1]} levels but the quantiser has {len(self.layers)}; "
                            f"pass (..., {len(self.layers)}) indices")
        for layer in self.layers:
            layer._codebook.check_initialised()
        if int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size:
            raise DataError(f"code indices must lie in [0, {self.codebook_size}), got "
                            f"[{int(indices.min())}, {int(indices.max())}]")
        return sum(layer.decode(indices[..., q]) for q, layer in enumerate(self.layers))

    def code_usage(self, indices: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(Q, K)` counts of each code per level (for the codebook-usage metrics)."""
        return code_usage(indices, self.codebook_size, mask)
