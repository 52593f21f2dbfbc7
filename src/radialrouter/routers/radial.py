"""RadialRouter (Jin et al., EMNLP 2025 Findings): a RadialFormer over the query and the candidate LLMs, trained
with KL to a cost-aware target distribution plus a query–query contrastive loss (papers.md §1).

Training loss ``L = L_KL + α·L_qq``:
- ``L_KL = KL(p ‖ p̂)``, ``p = softmax((quality − λ·cost_per_1k) / τ)`` (`objective.target_distribution`).
- ``L_qq``: k-means (``n_clusters``) on the training-query embeddings; for each query in a batch a random
  same-cluster positive and ``n_negatives`` other-cluster negatives from the batch, InfoNCE on the cosine
  similarity of the *projected* query (frozen encoder: the trainable projection is what it shapes; fine-tuned
  encoder: the encoder's own output) at temperature ``tau_c``, as RouterDC.
- ``use_kl=False`` is the paper's "without L_KL" ablation taken literally: only L_qq trains (it reaches the query
  projection alone), so the satellites and the head keep their random initialisation and routing carries no
  learned signal; model selection still picks the checkpoint with the best validation Score.

Two modes. ``lam_conditioned=False`` (the paper's protocol): one model per scenario, trained for ``lam``.
``lam_conditioned=True``: one model for every λ — λ enters through the trade-off features of `RadialFormer`, and
each training query draws its own λ (half the time one of the scenarios 0 / 0.02 / 0.1, otherwise log-uniform on
[1e-3, ``lam_max``]) with its target built at that λ. ``lam`` is then only the default for ``route``.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import (
    COST_SCALE,
    SCENARIOS,
    TAU_FRACTIONS,
    argmax_cheapest,
    target_distribution,
    tau_grid,
    utility,
)
from radialrouter.core.training import set_seed, train_module
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers._common import fit_cost_head, macro_score, predict_cost_head
from radialrouter.routers._torchutil import load_module_tensors, module_tensors
from radialrouter.routers.base import Router, RouterError, observed_candidates
from radialrouter.routers.embedded import EMBEDDED, load_embedded
from radialrouter.routers.radial_onnx import OnnxRadialFormer, onnx_runtime_available
from radialrouter.routers.radialformer import BACKBONES, RadialFormer

#: Where the embedded RadialRouter lives inside the package (see `load_default`).
DEFAULT_DIR = EMBEDDED["radial"]
ENCODER_MODES = ("frozen", "finetune")
#: ``kl``: the paper's KL to a cost-aware target; ``quality``: each satellite predicts its LLM's quality (masked
#: binary cross-entropy, so missing cells are simply not trained on) and routing maximises q̂ − λ·cost.
OBJECTIVES = ("kl", "quality")
#: Where `RadialRouter.set_inference_backend` runs inference.
INFERENCE_BACKENDS = ("auto", "torch", "onnx")
_EXPORT_LOCK = threading.Lock()


def query_contrastive_loss(z: torch.Tensor, cluster: torch.Tensor, n_negatives: int, tau_c: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """L_qq: −log e^{sim(q,q⁺)/τc} / (e^{sim(q,q⁺)/τc} + Σ_h e^{sim(q,q⁻_h)/τc}), cosine similarity, in-batch
    positive (same cluster) and ``n_negatives`` in-batch negatives (other clusters). Queries without a positive
    or with too few negatives in the batch are skipped; zero (with a graph) when none qualifies."""
    b = len(z)
    z = nn.functional.normalize(z, dim=-1)
    same = (cluster[:, None] == cluster[None, :]) & ~torch.eye(b, dtype=torch.bool, device=z.device)
    other = cluster[:, None] != cluster[None, :]
    use = same.any(dim=1) & (other.sum(dim=1) >= n_negatives)
    if not use.any():
        return z.sum() * 0.0
    noise = torch.rand(b, b, generator=generator).to(z.device)  # drawn on the CPU: seeded the same everywhere
    pos = torch.where(same, noise, -1.0).argmax(dim=1)
    neg = torch.where(other, noise, -1.0).topk(n_negatives, dim=1).indices
    sim = z @ z.T / tau_c
    logits = torch.cat([sim.gather(1, pos[:, None]), sim.gather(1, neg)], dim=1)[use]
    return nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=z.device))


class RadialRouter(Router):
    """RadialRouter: see the module docstring. Hyperparameters (all stored in ``config.json``):

    ``backbone`` (``radial`` | ``star`` | ``transformer`` | ``mlp``), ``d_model``, ``n_layers`` (T), ``n_heads``,
    ``dropout``, ``residual``; ``tau`` (target temperature: a number, or ``"auto"``: chosen by validation Score from
    `tau_grid`, see `_tau_candidates`), ``alpha`` (weight of L_qq; 0 drops it), ``tau_c``,
    ``n_negatives`` (H), ``n_clusters`` (k), ``use_kl``; ``lr``, ``weight_decay``, ``steps``, ``batch_size``,
    ``eval_every``, ``patience``, ``seed``; ``lam`` and ``lam_conditioned`` (see the module docstring),
    ``lam_max``; ``objective`` (``kl``, the paper's, or ``quality``: per-LLM quality predictions, see
    `OBJECTIVES`); ``encoder_mode`` (``frozen``: cached embeddings, ``finetune``: the query encoder trains too, at
    ``encoder_lr``, on the encoder's device — a GPU if it has one; the router is moved to the CPU afterwards);
    ``calibrate`` (fit a probability temperature on the validation split after training, `calibrate_probabilities`:
    p(pick) then reads as the chosen LLM's expected quality; changes the reported probabilities, never a decision).
    """

    name = "radial"
    lam_at_fit = False  # the default is λ-conditioned; per-scenario instances override this in __init__

    def __init__(
        self,
        lam: float = 0.02,
        lam_conditioned: bool = True,
        backbone: str = "radial",
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        residual: bool = True,
        tau: float | str = 1.0,
        alpha: float = 0.1,
        tau_c: float = 0.1,
        n_negatives: int = 3,
        n_clusters: int = 8,
        use_kl: bool = True,
        lam_max: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        steps: int = 1500,
        batch_size: int = 64,
        eval_every: int = 50,
        patience: int | None = 8,
        seed: int = 0,
        encoder_mode: str = "frozen",
        encoder_lr: float = 5e-5,
        objective: str = "kl",
        calibrate: bool = True,
        encoder: QueryEncoder | None = None,
    ) -> None:
        self.lam = lam
        self.lam_conditioned = lam_conditioned
        self.backbone = backbone
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.residual = residual
        self.tau = tau
        self.alpha = alpha
        self.tau_c = tau_c
        self.n_negatives = n_negatives
        self.n_clusters = n_clusters
        self.use_kl = use_kl
        self.lam_max = lam_max
        self.lr = lr
        self.weight_decay = weight_decay
        self.steps = steps
        self.batch_size = batch_size
        self.eval_every = eval_every
        self.patience = patience
        self.seed = seed
        self.encoder_mode = encoder_mode
        self.encoder_lr = encoder_lr
        self.objective = objective
        self.calibrate = calibrate
        self.encoder = encoder
        # Instance-level: a per-scenario model is trained for its ``lam`` (base.fit then routes at it by default).
        self.lam_at_fit = not lam_conditioned

    # ------------------------------------------------------------------ model
    def _check_params(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}; got {self.backbone!r}")
        if self.encoder_mode not in ENCODER_MODES:
            raise ValueError(f"encoder_mode must be one of {ENCODER_MODES}; got {self.encoder_mode!r}")
        auto = isinstance(self.tau, str) and self.tau == "auto"
        if not auto and (isinstance(self.tau, str) or not self.tau > 0) or not self.tau_c > 0:
            raise ValueError(f"tau must be > 0 or 'auto' and tau_c > 0; got {self.tau!r}, {self.tau_c}")
        if auto and self.encoder_mode == "finetune":
            raise ValueError("tau='auto' trains one router per candidate τ and needs a frozen encoder; choose τ with "
                             "encoder_mode='frozen', then fine-tune with that number")
        if not self.use_kl and self.alpha <= 0:
            raise ValueError("use_kl=False needs alpha > 0: with neither loss there is nothing to train")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {self.objective!r}")

    #: Some missing cells: the quality objective masks them out of its loss, the KL objective takes its target
    #: (and its own distribution) over each query's observed LLMs.
    missing_cells = "masked"
    selects_among_observed = True

    @property
    def partial_labels(self) -> bool:  # type: ignore[override]
        """With ``objective='quality'`` unknown quality cells (NaN) are masked out of the loss, so it learns from
        partially labelled traffic; the KL objective compares LLMs within a query and needs complete rows too
        (it trains masked on data where *some* cells are missing, see `missing_cells`)."""
        return self.objective == "quality"

    def _build(self, in_dim: int, n_llms: int) -> RadialFormer:
        return RadialFormer(in_dim, n_llms, self.d_model, self.n_layers, self.n_heads, self.dropout, self.backbone,
                            self.residual)

    def _scenario_lams(self) -> tuple[float, ...]:
        """The named trade-offs' λ on this router's pool (`Router.presets_`; the paper's for older models)."""
        return tuple((getattr(self, "presets_", None) or SCENARIOS).values())

    def _lam_bounds(self) -> tuple[float, float]:
        """The log-uniform training range of λ: [1e-3, lam_max], widened to reach a tenth of the smallest and
        twice the largest named trade-off, whatever the pool's price scale."""
        named = [lam for lam in self._scenario_lams() if lam > 0]
        low = min([1e-3, *(lam / 10 for lam in named)])
        return low, max([float(self.lam_max), 2 * low, *(2 * lam for lam in named)])

    def lam_range(self) -> tuple[float, float]:
        """A λ-conditioned model saw λ in [0, `_lam_bounds` top] in training; a per-scenario one routes at its own
        λ whatever is asked, so any λ is accepted."""
        if not self.lam_conditioned or self.objective == "quality":  # λ enters at routing only
            return super().lam_range()
        return 0.0, self._lam_bounds()[1]

    def llm_embedding(self) -> nn.Parameter:
        """The (n_llms, d_model) LLM embeddings m_i: the only per-LLM parameters (rows in ``llms_`` order)."""
        self._check_fitted()
        return self.net_.llm

    def _cost_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.mean_cost_ * COST_SCALE, dtype=torch.float32)

    def logits(self, x: torch.Tensor, lam: float | None = None, mask: torch.Tensor | None = None,
               cached: bool = False) -> torch.Tensor:
        """Differentiable (n, n_llms) logits for query embeddings ``x`` at ``lam`` (default: the trained one).
        ``cached`` (inference only) reuses the λ-dependent, query-independent part of the pass (`_conditioning`)."""
        lam = self.lam if lam is None or not self.lam_conditioned else lam
        dev = self.net_.llm.device
        cost = self._cost_tensor().to(dev)
        return self.net_(x.to(dev), torch.full((len(x),), float(lam), device=dev), cost,
                         None if mask is None else mask.to(dev), cond=self._conditioning(float(lam), cost) if cached
                         else None)

    def _weights_key(self) -> tuple:
        """Changes whenever the network, its LLM embeddings or any parameter (in place) changes: what the
        inference caches below are keyed by. (``parameters()`` walks the module tree — slower than the work saved —
        so the parameter list is captured once per network.)"""
        memo = getattr(self, "_params_memo", None)
        if memo is None or memo[0] is not self.net_ or memo[1] is not self.net_.llm:
            memo = self._params_memo = (self.net_, self.net_.llm, list(self.net_.parameters()))
        return (id(memo[0]), id(memo[1]), tuple([p._version for p in memo[2]]))

    def _conditioning(self, lam: float, cost: torch.Tensor) -> dict[str, Any]:
        """`RadialFormer.conditioning` for ``lam``, memoised while the weights and the pool's costs are unchanged."""
        key = (self._weights_key(), self.mean_cost_.tobytes())
        memo = getattr(self, "_cond_memo", None)
        if memo is None or memo["key"] != key:
            memo = self._cond_memo = {"key": key, "by_lam": {}}
        by_lam = memo["by_lam"]
        if lam not in by_lam:
            if len(by_lam) >= 64:  # explicit λs from clients: keep the memo bounded
                by_lam.clear()
            by_lam[lam] = self.net_.conditioning(lam, cost)
        return by_lam[lam]

    def set_inference_backend(self, backend: str = "auto", threads: int = 1) -> RadialRouter:
        """Run inference (`route`, `predict_scores`) on ``"torch"`` or ``"onnx"`` (ONNX Runtime, see
        `radial_onnx`: several times faster at batch 1, the serving path); ``"auto"`` takes ONNX when installed and
        its export checks out, else torch with a warning. The export happens here, not on the first request, and
        again when the weights or the pool change. Not saved with the model: a property of where it runs."""
        if backend not in INFERENCE_BACKENDS:
            raise ValueError(f"backend must be one of {INFERENCE_BACKENDS}; got {backend!r}")
        if backend != "torch" and not onnx_runtime_available():
            if backend == "onnx":
                raise RouterError("the ONNX inference backend needs onnxruntime and onnx: "
                                  "pip install 'radialrouter[onnx]'")
            warnings.warn("onnxruntime is not installed; RadialRouter inference runs on torch", stacklevel=2)
            backend = "torch"
        if int(threads) != getattr(self, "_onnx_threads", None):
            self._onnx_memo = None  # rebuilt below with the new thread count
        self._inference, self._onnx_threads = backend, int(threads)
        self._check_fitted()
        self._onnx()
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Copies (`pool.clone`) drop the inference caches: an ONNX Runtime session cannot be copied, and every
        cache is rebuilt from the copied weights on first use."""
        state = dict(self.__dict__)
        for cache in ("_onnx_memo", "_cond_memo", "_params_memo"):
            state.pop(cache, None)
        if "_inference" in state:
            state["_onnx_memo"] = None
        return state

    @property
    def inference_backend(self) -> str:
        """``"onnx"`` or ``"torch"``: what `route` runs on now."""
        return "onnx" if self._onnx() is not None else "torch"

    def _onnx(self) -> OnnxRadialFormer | None:
        """The ONNX Runtime copy of the network for the current weights, or None (torch inference)."""
        if getattr(self, "_inference", "torch") == "torch" or self.net_.training:
            return None
        key = self._weights_key()
        memo = self._onnx_memo
        if memo is None or memo[0] != key:
            with _EXPORT_LOCK:
                memo = self._onnx_memo
                if memo is None or memo[0] != key:
                    try:
                        memo = (key, OnnxRadialFormer(self.net_, self.in_dim_, self._cost_tensor().numpy(),
                                                      self._onnx_threads))
                    except Exception as exc:  # noqa: BLE001 - any export failure: route on torch instead
                        if self._inference == "onnx":
                            raise RouterError(f"cannot run this RadialRouter on ONNX Runtime: {exc}") from exc
                        warnings.warn(f"ONNX export of the RadialRouter failed ({exc}); inference runs on torch",
                                      stacklevel=3)
                        memo = (key, None)
                    self._onnx_memo = memo
        return memo[1]

    def add_llm(self, name: str, mean_cost: float, init_embedding: np.ndarray,
                cost_head: tuple[np.ndarray, float] | None = None) -> None:
        """Append LLM ``name`` (mean cost in USD per query) with embedding row ``init_embedding``; nothing else
        changes, so the backbone needs no retraining (train the new row alone, e.g. with `radialrouter.policy.pool`).
        ``cost_head`` = (weights (d,), intercept) of its per-query log-cost predictor (`fit_cost_head` on the
        probes); without it the new LLM's predicted cost is ``mean_cost`` for every query."""
        self._check_fitted()
        if name in self.llms_:
            raise RouterError(f"{name!r} is already in the pool {self.llms_}")
        row = torch.as_tensor(np.asarray(init_embedding, dtype=np.float32)).reshape(1, -1)
        if row.shape[1] != self.net_.llm.shape[1]:
            raise ValueError(f"init_embedding has width {row.shape[1]}, the router's LLM embeddings "
                             f"{self.net_.llm.shape[1]}")
        w, b = cost_head if cost_head is not None else (np.zeros(self.cost_w_.shape[0]), np.log(mean_cost))
        self.net_.llm = nn.Parameter(torch.cat([self.net_.llm.detach(), row]))
        self.llms_ = [*self.llms_, name]
        self.mean_cost_ = np.append(self.mean_cost_, float(mean_cost))
        self.cost_w_ = np.column_stack([self.cost_w_, np.asarray(w, dtype=np.float64).reshape(-1)])
        self.cost_b_ = np.append(self.cost_b_, float(b))

    def remove_llm(self, name: str) -> None:
        """Drop LLM ``name``: its embedding row and pool entry go; the other LLMs keep their rows."""
        self._check_fitted()
        if name not in self.llms_:
            raise RouterError(f"{name!r} is not in the pool {self.llms_}")
        keep = [i for i, llm in enumerate(self.llms_) if llm != name]
        self.net_.llm = nn.Parameter(self.net_.llm.detach()[keep].clone())
        self.llms_ = [self.llms_[i] for i in keep]
        self.mean_cost_ = self.mean_cost_[keep]
        self.cost_w_, self.cost_b_ = self.cost_w_[:, keep], self.cost_b_[keep]

    def trained_default_lam(self) -> float:
        """The ``lam`` hyperparameter, λ-conditioned or not (what `_fit` makes the default)."""
        return float(self.lam)

    # ------------------------------------------------------------------ training
    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        from sklearn.cluster import KMeans

        self._check_params()
        self.default_lam_ = self.trained_default_lam()
        finetune = self.encoder_mode == "finetune"
        if not finetune and train.embeddings is None:
            raise ValueError("radial: the dataset has no embeddings; call data.embed(encoder) first "
                             "(or use encoder_mode='finetune')")
        self.proba_temperature_ = None  # a refit invalidates an earlier probability calibration
        set_seed(self.seed)
        encoder = self.get_encoder() if finetune else None
        emb = self._embed_texts(train.prompts.tolist()) if finetune else np.asarray(train.embeddings, np.float32)
        self.in_dim_ = emb.shape[1]
        n_clusters = max(1, min(self.n_clusters, len(train)))
        clusters = KMeans(n_clusters=n_clusters, n_init=4, random_state=self.seed).fit_predict(emb)
        taus, how = self._tau_candidates(train, val)
        trials, best = [], None
        for tau in taus:
            result = self._train_once(train, val, tau, emb, clusters, encoder)
            trials.append({"tau": tau, "val_score": result.best_val, "best_step": result.best_step,
                           "steps_run": result.steps})
            better = best is None or (result.best_val is not None and best[1].best_val is not None
                                      and result.best_val > best[1].best_val)
            if better:
                best = (tau, result, copy.deepcopy(self.net_.state_dict()) if len(taus) > 1 else None)
        self.tau_, result = best[0], best[1]
        if len(taus) > 1:
            self.net_.load_state_dict(best[2])
        # Per-query cost (USD) of each LLM from the query embedding the router routes on: expected cost in
        # decisions and spend calibration (`radialrouter.policy.calibration`) then follow the query, not the pool mean.
        self.cost_w_, self.cost_b_ = fit_cost_head(self._embed_texts(train.prompts.tolist()) if finetune else emb,
                                                   train.cost)
        self.training_ = {
            "lam": None if self.lam_conditioned else self.lam,
            "lam_conditioned": self.lam_conditioned,
            "seed": self.seed,
            "steps_run": result.steps,
            "best_step": result.best_step,
            "val_score": result.best_val,
            "val_score_is": "mean macro Score over λ = " + ", ".join(f"{lam:g}" for lam in self._scenario_lams())
            if self.lam_conditioned
            else f"macro Score at λ = {self.lam}",
            "n_clusters": n_clusters,
            "tau": self.tau_,
            **({"tau_selection": {"how": how, "trials": trials}} if how != "given" else {}),
        }
        if self.calibrate and val is not None and len(val):
            self.training_["probability_calibration"] = self.calibrate_probabilities(val)

    def _tau_candidates(self, train: RoutingDataset, val: RoutingDataset | None) -> tuple[tuple[float, ...], str]:
        """The target temperatures to train with, and how they were chosen. A number: that one. ``"auto"``: every
        value of `tau_grid` (`TAU_FRACTIONS` × the spread of quality − λ·cost over the training queries at the
        λ this router is selected on), the one with the best validation Score kept; without validation data, or
        where τ shapes no training target (``objective="quality"``, ``use_kl=False``), a single value: the
        spread itself (the grid's 1×), and 1.0 for the quality objective, whose decisions τ cannot change."""
        if not (isinstance(self.tau, str) and self.tau == "auto"):
            return (float(self.tau),), "given"
        if self.objective == "quality":
            return (1.0,), "auto: τ only scales the quality objective's probabilities; 1.0"
        lams = (0.0,) if self.quality_only else (self._scenario_lams() if self.lam_conditioned else (self.lam,))
        grid = tau_grid(train.quality, train.cost, lams)
        if len(grid) == 1:
            return grid, "auto: every LLM scores alike on every training query; 1.0"
        middle = grid[list(TAU_FRACTIONS).index(1.0)]
        if val is None or not len(val):
            return (middle,), "auto without validation data: the spread of quality − λ·cost (the grid's 1×)"
        if not self.use_kl:
            return (middle,), "auto: use_kl=False, τ shapes no loss; the grid's 1×"
        return grid, "auto: best validation Score over " + ", ".join(f"{t:g}" for t in grid)

    def target_tau(self) -> float:
        """The target temperature τ in use: the number given, or the one ``tau="auto"`` chose at fit."""
        chosen = getattr(self, "tau_", None)
        if chosen is not None:
            return float(chosen)
        return 1.0 if isinstance(self.tau, str) else float(self.tau)

    def _train_once(self, train: RoutingDataset, val: RoutingDataset | None, tau: float, emb: np.ndarray,
                    clusters: np.ndarray, encoder: QueryEncoder | None) -> Any:
        """Build a fresh network in ``net_`` and train it at target temperature ``tau`` (seeded: every call starts
        from the same initialisation and draws the same batches); the `train_module` result."""
        finetune = encoder is not None
        set_seed(self.seed)
        device = torch.device(encoder.device if finetune else "cpu")
        self.net_ = self._build(self.in_dim_, len(self.llms_)).to(device)
        cluster = torch.from_numpy(clusters.astype(np.int64)).to(device)
        x = torch.from_numpy(emb)
        cost = self._cost_tensor().to(device)
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        fixed_target = torch.from_numpy(
            target_distribution(train.quality, train.cost, self.lam, tau).astype(np.float32)).to(device)
        trainable = nn.ModuleDict({"net": self.net_, **({"encoder": encoder.model} if finetune else {})})
        observed = torch.from_numpy(np.isfinite(train.quality)).to(device)  # missing cells are not trained on
        missing = not bool(observed.all())
        quality = torch.from_numpy(np.nan_to_num(train.quality).astype(np.float32)).to(device)

        def loss_fn(idx: np.ndarray) -> torch.Tensor:
            if finetune:
                z = encoder.forward(encoder.tokenize(train.prompts[idx].tolist()))
            else:
                z = x[idx]
            r0 = self.net_.project(z)
            if self.lam_conditioned:
                lams = self._sample_lams(rng, len(idx))
                target = torch.from_numpy(target_distribution(train.quality[idx], train.cost[idx], lams[:, None],
                                                              tau).astype(np.float32)).to(device)
            else:
                lams, target = np.full(len(idx), self.lam), fixed_target[idx]
            loss = z.sum() * 0.0
            if self.objective == "quality":  # each satellite's output is its LLM's quality logit (λ plays no part)
                raw = self.net_(z, torch.zeros(len(idx), device=device), cost, r0=r0)
                seen = observed[idx]
                loss = loss + nn.functional.binary_cross_entropy_with_logits(raw[seen], quality[idx][seen])
            elif self.use_kl:
                lam_t = torch.from_numpy(lams.astype(np.float32)).to(device)
                # Missing cells: the target is a softmax over the query's observed LLMs and the router's
                # distribution is taken over the same LLMs (the others hidden, as `route(candidates=...)` does).
                seen = observed[idx] if missing else None
                logp = torch.log_softmax(self.net_(z, lam_t, cost, seen, r0=r0), -1)
                kl = target * (torch.log(target.clamp_min(1e-12)) - logp)
                if missing:
                    kl = torch.where(seen, kl, torch.zeros_like(kl))
                loss = loss + kl.sum(-1).mean()
            if self.alpha > 0:
                qq = z if finetune else r0
                loss = loss + self.alpha * query_contrastive_loss(qq, cluster[idx], self.n_negatives, self.tau_c, gen)
            return loss

        val_fn = None
        if val is not None and len(val):
            val_lams = self._scenario_lams() if self.lam_conditioned else (self.lam,)
            xv = None if finetune else np.asarray(val.embeddings, np.float32)
            val_mask = observed_candidates(val)  # each validation query among its observed LLMs

            def val_fn() -> float:
                # Query vectors straight to the scores: a fine-tuning router's `predict` takes texts only.
                v = self._embed_texts(val.prompts.tolist()) if finetune else xv
                return float(np.mean([macro_score(argmax_cheapest(self._masked_scores(v, lam, val_mask),
                                                                  self.mean_cost_), val, lam)
                                      for lam in val_lams]))

        # The pretrained encoder takes a fine-tuning learning rate (the paper's 5e-5), the new network its own.
        groups = [{"params": list(self.net_.parameters())},
                  {"params": list(encoder.model.parameters()), "lr": self.encoder_lr}] if finetune else None
        result = train_module(trainable, loss_fn, len(train), steps=self.steps, batch_size=self.batch_size,
                              lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, val_fn=val_fn,
                              eval_every=self.eval_every, patience=self.patience, progress=False, desc=self.name,
                              parameters=groups)
        self.net_.cpu()  # routing, saving and pool changes run on the CPU
        return result

    def _sample_lams(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Per-query training λ: half the time a named trade-off, otherwise log-uniform on `_lam_bounds`; always 0
        on a quality-only pool, where every λ has the same target and routing runs at λ = 0."""
        if self.quality_only:
            return np.zeros(n)
        scenario = rng.choice(np.asarray(self._scenario_lams()), size=n)
        low, high = self._lam_bounds()
        spread = np.exp(rng.uniform(np.log(low), np.log(high), size=n))
        return np.where(rng.random(n) < 0.5, scenario, spread)

    # ------------------------------------------------------------------ inference
    def _inputs(self, queries: Any) -> Any:
        # A fine-tuned encoder is part of the model: embed the text with it, never with cached base vectors.
        if self.encoder_mode != "finetune":
            return super()._inputs(queries)
        if isinstance(queries, RoutingDataset):
            queries = queries.prompts.tolist()
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, np.ndarray) and queries.dtype.kind == "f":
            raise RouterError("this router fine-tuned its encoder: pass query texts, not precomputed embeddings")
        return self._embed_texts(list(queries))

    def _embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors from the (possibly fine-tuned) encoder itself, bypassing the embedding cache."""
        encoder = self.get_encoder()
        model = encoder.model
        was_training = model.training
        model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                out.append(encoder.forward(encoder.tokenize(texts[start:start + batch_size])).float().cpu().numpy())
        model.train(was_training)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, encoder.dim), np.float32)

    def _log_proba(self, x: np.ndarray, lam: float, mask: np.ndarray | None = None) -> np.ndarray:
        """Log-softmax over the candidates in float64 (probabilities sum to 1); masked LLMs are −inf and hidden
        from the relay. With the ``quality`` objective the network's outputs are quality logits, and the
        distribution is softmax((q̂ − λ·cost) / τ)."""
        if self.net_.training:  # checked, not set: eval() walks every submodule, a tenth of batch-1 routing time
            self.net_.eval()
        quality = self.objective == "quality"
        lam_in = 0.0 if quality else lam
        onnx = self._onnx()
        if onnx is not None:
            x = np.asarray(x, dtype=np.float32)
            lam_in = self.lam if not self.lam_conditioned and not quality else lam_in
            full = np.ones((len(x), len(self.llms_)), dtype=bool) if mask is None else mask
            cost = np.asarray(self.mean_cost_ * COST_SCALE, dtype=np.float32)
            logits = onnx.logits(x, np.full(len(x), lam_in, dtype=np.float32), cost, full).astype(np.float64)
        else:
            with torch.inference_mode():
                logits = self.logits(torch.from_numpy(np.asarray(x, dtype=np.float32)), lam_in,
                                     None if mask is None else torch.from_numpy(np.array(mask, dtype=bool)),
                                     cached=True).double().cpu().numpy()
        if quality:
            with np.errstate(over="ignore"):
                score = 1.0 / (1.0 + np.exp(-logits)) - lam * self.mean_cost_ * COST_SCALE
            logits = np.where(np.isneginf(logits), -np.inf, score / self.target_tau())
        with np.errstate(invalid="ignore"):  # rows of −inf only arise from an all-masked row, refused earlier
            z = logits - logits.max(axis=1, keepdims=True)
            return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def _masked_scores(self, x: np.ndarray, lam: float, mask: np.ndarray | None) -> np.ndarray:
        return self._log_proba(x, lam, mask)

    def _scores_and_proba(self, x: np.ndarray, lam: float, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        log_proba = self._log_proba(x, lam, mask)  # one forward pass for both
        temperature = self.proba_temperature(lam)
        if temperature == 1.0:
            return log_proba, np.exp(log_proba)
        # Calibrated probabilities: softmax(log p̂ / T) = softmax(logits / T). The scores (and so every decision and
        # ranking) stay the uncalibrated log-probabilities.
        return log_proba, np.exp(_log_softmax(log_proba / temperature))

    # ------------------------------------------------------------------ probability calibration
    def proba_temperature(self, lam: float) -> float:
        """The temperature T that the reported probabilities at ``lam`` are divided by (1 when uncalibrated):
        `calibrate_probabilities` fits one per named trade-off; between them log T is interpolated linearly in
        λ, beyond them the nearest one's is used. A per-scenario model has one, whatever λ is asked."""
        fitted = getattr(self, "proba_temperature_", None)
        if not fitted:
            return 1.0
        lams, temps = fitted["lams"], fitted["temperatures"]
        return float(temps[0]) if len(temps) == 1 else float(np.exp(np.interp(lam, lams, np.log(temps))))

    def calibration_lams(self) -> tuple[float, ...]:
        """The λ values `calibrate_probabilities` fits a temperature at: the named trade-offs (λ-conditioned or the
        quality objective), the model's own λ (per-scenario), 0 on a quality-only pool."""
        if self.quality_only:
            return (0.0,)
        if not self.lam_conditioned and self.objective != "quality":
            return (float(self.lam),)
        return tuple(sorted(set(self._scenario_lams())))

    def calibrate_probabilities(self, data: RoutingDataset, lams: Sequence[float] | None = None,
                                labels: str = "pick") -> dict[str, Any]:
        """Temperature scaling (Guo et al. 2017) of the probabilities the router reports, fitted on labelled
        ``data`` (`_fit` uses the validation split): at each λ of ``lams`` (default `calibration_lams`) the T > 0
        (searched on [0.01, 100]) that minimises a negative log-likelihood of softmax(log p̂ / T), per ``labels``:

        - ``"pick"`` (the default): did the router's pick answer well? Binary NLL of p(pick) against the pick's
          quality (0/1 labels, or a score clipped to 0..1 as a soft label), so p(pick) reads as the expected
          quality of the chosen LLM: what a threshold on it ("escalate when the pick is unlikely to be right")
          needs.
        - ``"best"``: −log Σ_{i ∈ B} p_i over the query's best LLMs B under quality − λ·cost (ties all included;
          queries where every LLM ties are left out), so p_i reads as "the chance that LLM i is a best choice".
          At λ > 0 B is usually one LLM, the cheapest correct one, which the router rarely picks (it weighs expected
          quality); on RouterBench that pushed T to its cap, a uniform distribution (docs/radialrouter.md).

        Queries with a single candidate say nothing and are left out. Decisions and rankings do not change (they
        use the uncalibrated scores). Returns and stores (``proba_temperature_``, saved with the router) the λ
        values and temperatures; the report adds the NLL before and after."""
        from scipy.optimize import minimize_scalar

        if labels not in ("pick", "best"):
            raise ValueError(f"labels must be 'pick' or 'best'; got {labels!r}")
        self._check_fitted()
        lams = tuple(sorted(set(float(lam) for lam in (lams if lams is not None else self.calibration_lams()))))
        x = self._inputs(data)
        mask = observed_candidates(data)
        seen = np.isfinite(data.quality)
        temps, before, after, used = [], [], [], []
        for lam in lams:
            log_proba = self._log_proba(x, lam, mask)
            if labels == "pick":
                pick = argmax_cheapest(log_proba, self.mean_cost_)
                keep = np.isfinite(log_proba).sum(axis=1) > 1
                y = np.clip(data.quality[np.arange(len(pick)), pick][keep], 0.0, 1.0)  # observed: among candidates
                lp, pick = log_proba[keep], pick[keep]

                def nll(log_t: float, lp: np.ndarray = lp, pick: np.ndarray = pick, y: np.ndarray = y) -> float:
                    p = np.exp(_log_softmax(lp / np.exp(log_t))[np.arange(len(lp)), pick]).clip(1e-12, 1 - 1e-12)
                    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
            else:
                u = np.where(seen, utility(data.quality, data.cost, lam), -np.inf)
                best = u >= u.max(axis=1, keepdims=True) - 1e-9
                keep = (best != seen).any(axis=1)  # some observed LLM is not a best one
                lp, b = log_proba[keep], best[keep]

                def nll(log_t: float, lp: np.ndarray = lp, b: np.ndarray = b) -> float:
                    z = _log_softmax(lp / np.exp(log_t))
                    return float(-np.mean(np.logaddexp.reduce(np.where(b, z, -np.inf), axis=1)))
            used.append(int(keep.sum()))
            if not keep.any():
                temps.append(1.0)
                before.append(None)
                after.append(None)
                continue
            fit = minimize_scalar(nll, bounds=(np.log(1e-2), np.log(1e2)), method="bounded", options={"xatol": 1e-4})
            t = float(f"{np.exp(fit.x):.4g}")
            temps.append(t)
            before.append(round(nll(0.0), 5))
            after.append(round(nll(np.log(t)), 5))
        self.proba_temperature_ = {"lams": list(lams), "temperatures": temps, "labels": labels}
        return {**self.proba_temperature_, "nll_before": before, "nll_after": after, "n_queries": used}

    def _costs(self, x: np.ndarray) -> np.ndarray:
        """Predicted USD cost per query of each LLM (ridge on log cost over the query embedding)."""
        return predict_cost_head(x, self.cost_w_, self.cost_b_)

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        # Per-scenario models route at their trained λ whatever is asked (train one model per scenario).
        return self._log_proba(x, lam)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = {**module_tensors(self.net_, "net"), "cost_w": self.cost_w_, "cost_b": self.cost_b_}
        if self.encoder_mode == "finetune":
            state.update(module_tensors(self.get_encoder().model, "encoder"))
        return state

    def _extra_state(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim_, "tau": self.target_tau(),
                "proba_temperature": getattr(self, "proba_temperature_", None)}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.in_dim_ = int(extra["in_dim"])
        self.tau_ = None if extra.get("tau") is None else float(extra["tau"])  # older routers: the ``tau`` param
        calibration = extra.get("proba_temperature")
        self.proba_temperature_ = None if not calibration else {
            "lams": [float(v) for v in calibration["lams"]],
            "temperatures": [float(v) for v in calibration["temperatures"]],
            "labels": str(calibration.get("labels", "pick"))}
        if self.encoder is not None and self.encoder_mode == "frozen" and self.encoder.dim != self.in_dim_:
            raise RouterError(f"the router expects {self.in_dim_}-d query vectors; its encoder gives "
                              f"{self.encoder.dim}-d")
        self.net_ = load_module_tensors(self._build(self.in_dim_, len(self.llms_)), tensors, "net")
        self.cost_w_, self.cost_b_ = tensors["cost_w"], tensors["cost_b"]
        if self.encoder_mode == "finetune":
            load_module_tensors(self.get_encoder().model, tensors, "encoder")
        # A loaded router is for inference: ONNX Runtime when installed ("auto": exported on first use, torch if the
        # export fails), as the server runs it — route() from text ~1 ms instead of ~1.8 ms (radial_latency.md).
        # Training (`fit`) runs on torch whatever is set; set_inference_backend("torch") opts out.
        self._inference = "auto" if onnx_runtime_available() else "torch"
        self._onnx_threads, self._onnx_memo = 1, None


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax; −inf entries (masked LLMs) stay −inf."""
    with np.errstate(invalid="ignore"):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def load_default(encoder: QueryEncoder | None = None) -> RadialRouter:
    """The embedded RadialRouter: trained on RouterBench (3 tasks, 11 LLMs) with the bundled static encoder
    (`benchmarks/train_default.py --router radial` reproduces it). The router ``serve`` starts with is
    `radialrouter.routers.embedded.load_embedded` (an MLP); this one is the paper's, whose pool can grow."""
    return load_embedded("radial", encoder=encoder)


__all__ = ["DEFAULT_DIR", "RadialRouter", "load_default", "query_contrastive_loss"]
