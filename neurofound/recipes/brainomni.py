"""BrainOmni recipes: EEG/MEG from any device -> BrainTokenizer (stage 1) -> masked token model (stage 2).

Two families share this file because they share their data:

* `brainomni_tokenizer` (`BrainTokenizerRecipe`): recordings -> normalised segments -> the
  BrainTokenizer trained to reconstruct every channel (25 % hidden) through 16 latent sources and a
  residual VQ. Its `model/` holds the tokenizer under `model/tokenizer/`, which is what
  `tokenizer.pretrained=<run>` of stage 2 loads.
* `brainomni` (`BrainOmniRecipe`): the same segments, tokenised by the frozen stage-1 tokenizer,
  -> the criss-cross transformer trained to predict every RVQ level of masked tokens. Its
  `model/` embeds the tokenizer (weights, codebooks, init state), so it loads on its own.
  Fine-tuning (`BrainOmniDecoding`): labelled trials of devices never seen in pretraining, decoded
  from the pooled features with the reference's MLP head, subject-wise folds x seeds with the
  learning rate chosen on validation subjects, beside the same network from scratch and CSP + LDA.

Data: `data=meeg_sim` (the embedded simulator: six real MNE devices, four for pretraining, two held
out) or `data=mne` (a user's files: FIF, EDF, BrainVision, EEGLAB, BIDS).
"""

from __future__ import annotations

import inspect
import logging

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neurofound.data.contracts import SensorContract
from neurofound.data.sensor_datamodule import normalization_step
from neurofound.errors import ConfigError, UnsupportedError
from neurofound.models.brainomni import BrainOmni, BrainOmniConfig, sizes_from_tokenizer
from neurofound.models.brainomni_tokenizer import BrainTokenizerModel
from neurofound.recipes.base import DataBundle, EvalResult, Recipe, RunContext, Stage
from neurofound.tasks.base import to_device
from neurofound.tasks.brainomni import sensors_of

log = logging.getLogger("neurofound")


# ================================================================================================================
# data, shared by both stages
# ================================================================================================================
def load_corpus(cfg: DictConfig, purpose: str):
    """The run's `SensorCorpus` from `cfg.data.corpus` (a builder that takes the verb gets it: a user's files are
    all scored by `eval`, split for `train`)."""
    import mne

    mne.set_log_level("WARNING")
    builder = instantiate(cfg.data.corpus, _partial_=True)
    fn = getattr(builder, "func", builder)
    kwargs = {"purpose": purpose} if "purpose" in inspect.signature(fn).parameters else {}
    return builder(**kwargs)


def _preprocessing(corpus, cfg: DictConfig) -> list[str]:
    steps: list[str] = []
    for rec in corpus:
        for step in rec.meta.get("preprocessing", []) or []:
            if step not in steps and not step.startswith("bad channels"):
                steps.append(step)
    norm = OmegaConf.select(cfg, "data.normalization", default="sensortype")
    steps.append(normalization_step(str(norm), bool(cfg.get("reference_compat", False))))
    return steps


def segment_data(cfg: DictConfig, tokenizer=None, *, purpose: str) -> DataBundle:
    """Segments of the corpus by split (train, val, test, unseen)."""
    corpus = load_corpus(cfg, purpose)
    dm = instantiate(cfg.data.datamodule)(corpus=corpus)
    log.info("data: %r; %s", corpus, dm.describe())
    source = corpus.meta.get("description") or corpus.meta.get("source") or "recordings"
    return DataBundle(datamodule=dm, contract=dm.input_contract(), tokenizer=tokenizer,
                      description=f"{source}: {dm.describe()}", preprocessing=_preprocessing(corpus, cfg),
                      extra={"corpus": corpus})


# ================================================================================================================
# stage 1: the BrainTokenizer
# ================================================================================================================
class BrainTokenizerRecipe(Recipe):
    family = "brainomni_tokenizer"
    contract = SensorContract

    def data(self, cfg: DictConfig, tokenizer=None, *, purpose: str = "train") -> DataBundle:
        return segment_data(cfg, tokenizer, purpose=purpose)

    def model(self, cfg: DictConfig, data: DataBundle) -> BrainTokenizerModel:
        model = BrainTokenizerModel(instantiate(cfg.model)(reference_compat=bool(cfg.reference_compat)))
        model.input_contract = data.contract
        return model

    def stages(self, cfg: DictConfig, data: DataBundle, model: BrainTokenizerModel) -> list[Stage]:
        return [Stage("tokenizer", instantiate(cfg.task)(model=model), data.datamodule, save_to="model")]

    def evaluate(self, ctx: RunContext, models: dict[str, torch.nn.Module]) -> EvalResult:
        from neurofound.tasks.brainomni_eval import evaluate_tokenizer

        e = ctx.cfg.eval
        res = evaluate_tokenizer(models["model"], ctx.data.datamodule, ctx.report_dir,
                                 max_batches=2 if ctx.fast else e.get("max_batches"),
                                 hidden_ratio=float(e.hidden_ratio), seed=ctx.seed,
                                 cross_device_pairs=2 if ctx.fast else e.get("cross_device_pairs"))
        return EvalResult(metrics=res.metrics, figures=res.figures, notes=tokenizer_notes(res.metrics))

    def finetune(self):
        raise UnsupportedError("the BrainTokenizer is stage 1 and has no downstream head: train stage 2 on it "
                               "(neurofound train experiment=brainomni_sim tokenizer.pretrained=<this run>) and "
                               "fine-tune that (neurofound finetune experiment=brainomni_decode init=<stage-2 run>)")


def tokenizer_notes(m: dict[str, float]) -> list[str]:
    """Headline reconstruction figures beside their baselines, saying which wins."""
    out = []

    def num(key):
        v = m.get(key)
        return None if v is None or not np.isfinite(v) else float(v)

    held = num("test/recon_corr")
    if held is not None:
        out.append(f"Reconstruction PCC on new subjects of the pretraining devices: {held:.3f} (the paper's BrainTokenizer: "
                   f"0.748 EEG / 0.711 MEG on real data).")
    for mod, paper in (("eeg", 0.802), ("meg", 0.695)):
        v = num(f"test/recon_corr_unseen_device_{mod}")
        if v is not None:
            gap = "" if held is None else (f"; {'within' if v >= held - 0.05 else '**more than**'} 0.05 of the "
                                           f"held-in figure")
            out.append(f"Unseen {mod.upper()} device (never in pretraining): {v:.3f} (paper {paper:.3f}){gap}.")
    masked, idw = num("test/recon_corr_masked_channels"), num("test/recon_corr_masked_channels_idw_baseline")
    if masked is not None and idw is not None:
        verdict = "the tokenizer is better" if masked > idw else "**the interpolation baseline wins**"
        out.append(f"Hidden channels (25 %) decoded from the others: {masked:.3f} vs inverse-distance interpolation of "
                   f"the nearest sensors of the same type {idw:.3f}: {verdict}.")
    cross = num("test/recon_corr_cross_device")
    if cross is not None:
        out.append(f"Encoded on one device, decoded onto another device's sensors that recorded the same activity: "
                   f"{cross:.3f}.")
    usage = num("test/codebook_usage")
    if usage is not None:
        verdict = "meets" if usage >= 0.9 else "**misses**"
        out.append(f"Codebook usage (the least-used RVQ level): {100 * usage:.0f}% of the codes, which {verdict} the "
                   f"90% target.")
    return out


# ================================================================================================================
# stage 2: masked token prediction
# ================================================================================================================
class BrainOmniRecipe(Recipe):
    family = "brainomni"
    contract = SensorContract

    def data(self, cfg: DictConfig, tokenizer=None, *, purpose: str = "train") -> DataBundle:
        if tokenizer is None:
            raise ConfigError("stage 2 needs a trained BrainTokenizer: tokenizer.pretrained=<stage-1 run dir | model "
                              "dir | hub id> (train one with neurofound train experiment=brainomni_tokenizer_sim)")
        if purpose == "finetune":
            return trial_data(cfg, tokenizer)
        return segment_data(cfg, tokenizer, purpose=purpose)

    def model(self, cfg: DictConfig, data: DataBundle) -> BrainOmni:
        model = BrainOmni(instantiate(cfg.model)(**sizes_from_tokenizer(data.tokenizer)))
        model.attach_tokenizer(data.tokenizer)
        model.input_contract = data.contract
        return model

    def stages(self, cfg: DictConfig, data: DataBundle, model: BrainOmni) -> list[Stage]:
        return [Stage("pretrain", instantiate(cfg.task)(model=model), data.datamodule, save_to="model")]

    def evaluate(self, ctx: RunContext, models: dict[str, torch.nn.Module]) -> EvalResult:
        from neurofound.tasks.brainomni_eval import evaluate_masked

        e = ctx.cfg.eval
        res = evaluate_masked(models["model"], ctx.data.datamodule, ctx.report_dir,
                              max_batches=2 if ctx.fast else e.get("max_batches"), seed=ctx.seed)
        return EvalResult(metrics=res.metrics, figures=res.figures, notes=masked_notes(res.metrics))

    def finetune(self) -> "BrainOmniDecoding":
        return BrainOmniDecoding()


def masked_notes(m: dict[str, float]) -> list[str]:
    out = []
    q = 1
    while f"test/masked_acc_level{q}" in m:
        acc, base = m[f"test/masked_acc_level{q}"], m.get(f"test/masked_acc_level{q}_unigram_baseline")
        if base is not None:
            verdict = "the model is better" if acc > base else "**the baseline wins**"
            out.append(f"Masked-token accuracy, RVQ level {q}: {acc:.3f} vs always the most frequent training code "
                       f"{base:.3f}: {verdict}.")
        q += 1
    return out


# ================================================================================================================
# fine-tuning: decoding labelled trials of held-out devices
# ================================================================================================================
def trial_data(cfg: DictConfig, tokenizer) -> DataBundle:
    corpus = load_corpus(cfg, "finetune")
    folds = int(OmegaConf.select(cfg, "finetune.protocol.folds", default=1) or 1)
    # one fold of a 5-fold split when the protocol asks for no folds
    dm = instantiate(cfg.data.downstream)(corpus=corpus, n_folds=folds if folds > 1 else 5)
    log.info("downstream data: %s", dm.describe())
    return DataBundle(datamodule=dm, contract=dm.input_contract(), tokenizer=tokenizer,
                      description=f"{corpus.meta.get('description', 'recordings')}: {dm.describe()}",
                      preprocessing=_preprocessing(corpus, cfg), extra={"classes": dm.classes})


class BrainOmniDecoding:
    """Trial classification from `BrainOmni.pooled` features (spec §5.1) as a `FinetuneSpec`.

    Head (the reference's): Dropout 0.1 -> Linear(C' x lm_dim -> lm_dim) -> SELU -> Linear(-> classes),
    cross-entropy with label smoothing 0.1. The tokenizer is always frozen. `frozen` trains the head
    on the frozen network (its pooled features are computed once, in eval mode, and cached);
    `lora` adds adapters to every criss-cross attention's `qkv`; `full` trains network and head, the
    network at `finetune.backbone_lr_scale` of the head's rate. The from-scratch baseline is the
    same network freshly initialised, trained in full mode on the same frozen (pretrained)
    tokenizer: it measures what stage-2 pretraining adds. Tokens are cached per trial (the
    tokenizer is frozen), which makes every fit of the protocol cheap. The CSP + LDA baseline
    band-passes the trials to `csp_band` (Hz) first.
    """

    modes = ("frozen", "linear", "full", "lora")
    lora_targets = ("qkv",)
    objective = "classification"
    label_smoothing = 0.1
    csp_band = (8.0, 30.0)  # mu and beta, MNE's motor-imagery example

    def __init__(self):
        self._tokens: dict[tuple[int, int], tuple] = {}
        self._pooled: dict[tuple[int, int], torch.Tensor] = {}

    # -- building -----------------------------------------------------------------------------------------------
    def prepare(self, pretrained: BrainOmni, data: DataBundle) -> BrainOmni:
        cfg = pretrained.config.to_dict()
        cfg["n_classes"] = len(data.extra["classes"])
        model = BrainOmni(BrainOmniConfig.from_dict(cfg))
        missing, unexpected = model.load_state_dict(_own_state(pretrained), strict=False)
        missing = [k for k in missing if not k.startswith(("head.", "tokenizer."))]
        if missing or unexpected:
            raise ConfigError(f"pretrained weights do not fit: missing {missing}, unexpected {unexpected}")
        model.attach_tokenizer(pretrained.tokenizer)
        model.input_contract = data.contract
        model.training_info = dict(pretrained.training_info)
        return model

    def scratch(self, model: BrainOmni) -> BrainOmni:
        fresh = BrainOmni(BrainOmniConfig.from_dict(model.config.to_dict()))
        fresh.attach_tokenizer(model.tokenizer)
        fresh.input_contract = model.input_contract
        return fresh

    def trunk(self, model: BrainOmni) -> list[torch.nn.Module]:
        return [model.blocks]  # LoRA wraps every criss-cross qkv (the projection is frozen with the rest)

    def frozen_parts(self, model: BrainOmni) -> list[torch.nn.Module]:
        return [model.tokenizer]  # frozen in every mode, `full` included (spec §5.1)

    def heads(self, model: BrainOmni) -> list[torch.nn.Parameter]:
        return list(model.head.parameters())

    # -- data ---------------------------------------------------------------------------------------------------
    def _batch_tokens(self, model: BrainOmni, batch: dict) -> tuple:
        keys = list(zip(batch["recording"].tolist(), batch["start"].tolist()))
        missing = [i for i, k in enumerate(keys) if k not in self._tokens]
        if missing:
            sub = {k: v[missing] for k, v in batch.items()}
            feats, idx, tmask = model.tokenize(sub["x"], sensors_of(sub))
            for j, i in enumerate(missing):
                self._tokens[keys[i]] = (feats[j:j + 1].cpu(), idx[j:j + 1].cpu(), tmask[j:j + 1].cpu())
        dev = batch["x"].device
        parts = [self._tokens[k] for k in keys]
        return tuple(torch.cat([p[i] for p in parts]).to(dev) for i in range(3))

    def _frozen_pooled(self, model: BrainOmni, batch: dict) -> torch.Tensor:
        """Pooled features of the frozen network (eval mode, cached by trial and by the network's weights)."""
        # every fit of one job prepares its model from the same pretrained network, frozen in this mode: the
        # features of a trial are the same in each, so they are cached by trial
        keys = [(r, s) for r, s in zip(batch["recording"].tolist(), batch["start"].tolist())]
        missing = [i for i, k in enumerate(keys) if k not in self._pooled]
        if missing:
            sub = {k: v[missing] for k, v in batch.items()}
            was = model.training
            model.eval()
            with torch.no_grad():
                feats = model.pooled(tokens=self._batch_tokens(model, sub))
            model.train(was)
            for j, i in enumerate(missing):
                self._pooled[keys[i]] = feats[j].cpu()
        return torch.stack([self._pooled[k] for k in keys]).to(batch["x"].device)

    def logits(self, model: BrainOmni, batch: dict, mode: str) -> torch.Tensor:
        if mode == "frozen":
            return model.head(self._frozen_pooled(model, batch))
        return model.classify(tokens=self._batch_tokens(model, batch))

    # -- the FinetuneSpec protocol --------------------------------------------------------------------------------
    def loss(self, model: BrainOmni, batch: dict, mode: str) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch, mode), batch["label"], label_smoothing=self.label_smoothing)

    def features(self, model: BrainOmni, batch: dict) -> torch.Tensor:
        return model.pooled(tokens=self._batch_tokens(model, batch))

    def labels(self, batch: dict) -> torch.Tensor:
        return batch["label"]

    def loader(self, data: DataBundle, split: str):
        return data.datamodule.dataloader(split, shuffle=False)

    @torch.no_grad()
    def predict(self, model: BrainOmni, loader) -> tuple[np.ndarray, np.ndarray]:
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        ys, ps = [], []
        for batch in loader:
            batch = to_device(batch, dev)
            ys.append(batch["label"].cpu().numpy())
            ps.append(model.classify(tokens=self._batch_tokens(model, batch)).argmax(-1).cpu().numpy())
        model.train(was)
        if not ys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(ys), np.concatenate(ps)

    def score(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        from neurofound.eval.metrics import balanced_accuracy

        return {"balanced_acc": balanced_accuracy(y_true, y_pred)}

    def baselines(self, data: DataBundle) -> dict[str, float]:
        """CSP + LDA (MNE) on the same fold, band-passed to `csp_band`: components chosen on validation, scored on
        test."""
        from neurofound.eval.metrics import balanced_accuracy
        from neurofound.eval.probes import csp_lda

        dm = data.datamodule
        tr, va, te = dm.arrays("train"), dm.arrays("val"), dm.arrays("test")
        res = csp_lda(tr[0], tr[1], te[0], val_x=va[0], val_y=va[1], sfreq=dm.sampling_rate, band=self.csp_band)
        return {"balanced_acc_csp_baseline": balanced_accuracy(te[1], res["pred"])}


def _own_state(model: BrainOmni) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("tokenizer.")}


__all__ = ["BrainOmniDecoding", "BrainOmniRecipe", "BrainTokenizerRecipe", "load_corpus", "masked_notes",
           "segment_data", "tokenizer_notes", "trial_data"]
