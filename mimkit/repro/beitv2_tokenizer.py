"""BEiT v2 (Peng et al., 2022): a VQ-KD tokenizer distilled from a teacher uses its codebook well,
and masked prediction of its codes learns better representations than a pixel target.

Stages, each trained once and reused (the teacher in work/shared/mae_teacher, for any other
reproduction that distils it):
  1. the teacher: `mae_demo_fmnist` (a 128-d x 4 MAE), shortened;
  2. the tokenizer: `vqkd_fmnist model.teacher=<1>` (512 codes of 32-d on the 7x7 patch grid,
     dead-code restart after 50 steps), and the same with model.restart_after=0 (the ablation);
  3. MIM: `beitv2_fmnist model.tokenizer=<2>` (128-d x 4 ViT, 40% block masking, aggregation head)
     predicting the codes, and the SAME network, masking, recipe and steps with model.target=pixels
     (each hidden patch's per-patch-normalised pixels, MSE: the low-level target);
then the tokenizers' codebook usage / perplexity / teacher cosine on the test split and frozen-feature
probes (linear + k-NN, cls and mean pooling) of both MIM models, of the ViT at random init and of
the teacher itself (what the codes can carry at most).
"""
import csv
import time

import torch
import torch.nn.functional as F

from ..registry import load_model
from ..eval.tokenizer import evaluate_tokenizer
from ..eval.features import labelled_batches
from ..eval.report import probe_model, random_init_like
from ..teacher_loading import attach_teacher_if_available, load_teacher
from .context import ReproContext
from .report import Report
from .stages import fresh_minutes, stage_text, timed_train

# Throughput measured on this machine (one thread, shared with two other trainings, ~65% of a core):
# mae_demo_fmnist ~300 images/s (0.21 s / step of 64), vqkd_fmnist ~80 images/s (teacher forward
# included), beitv2_fmnist ~70 images/s (either target; 6 blocks over all 50 tokens), probe features
# ~250 images/s. Full mode measured: 3.8 (teacher) + 2.9 + 2.6 (VQ-KD) + 4.2 + 3.1 (BEiT v2) min of
# training and ~3.5 min of evaluation, ~20 min in all.
FULL = {"teacher_steps": 800, "teacher_batch": 64, "vqkd_steps": 400, "vqkd_batch": 32, "beit_steps": 800,
        "beit_batch": 32, "ablation": True, "train_limit": 5000, "test_limit": 5000, "baseline_images": 2000}
QUICK = {"teacher_steps": 10, "teacher_batch": 32, "vqkd_steps": 10, "vqkd_batch": 16, "beit_steps": 10,
         "beit_batch": 16, "ablation": True, "train_limit": 300, "test_limit": 300, "baseline_images": 200}
PRIMARY_POOL = "cls"  # BEiT v2's linear probe reads the cls token (what the aggregation head trains)
MARGIN = 0.5  # points of top-1: a smaller gap is within the spread of seeds at this scale
USAGE_MIN = 0.95  # "uses its codebook well": the released tokenizers use 97-100% of their codes
RESTART_GAIN = 0.10  # restarts "prevent collapse" if they add >= 10 points of codebook usage
COSINE_GAIN = 0.02  # the codes carry more than the patch position if they beat its cosine by this


def last_logged(run_dir, keys: tuple[str, ...]) -> dict:
    """The last row of a run's log.csv, restricted to `keys` (floats; missing keys left out)."""
    with open(run_dir / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {k: float(rows[-1][k]) for k in keys if rows and rows[-1].get(k) not in (None, "")}


def schedule(steps: int, batch: int, warmup_fraction: float = 0.05) -> list[str]:
    """The overrides that shorten a preset to `steps` of `batch` (warmup scaled, one checkpoint at the end)."""
    return [f"train.steps={steps}", f"train.batch_size={batch}",
            f"optim.warmup_steps={max(int(steps * warmup_fraction), 1)}", f"train.ckpt_every={steps}"]


@torch.no_grad()
def position_mean_cosine(teacher, train_set, test_set, batch_size: int = 256) -> float:
    """The cosine a tokenizer scores by knowing only the patch position: the mean teacher feature
    of each position over train_set (L, D) against the teacher's features of every test patch,
    averaged over images and patches (the teacher-cosine baseline of a code-free decoder)."""
    total, n = None, 0
    for batch in labelled_batches(train_set, batch_size):
        features = teacher(batch["images"])  # (B, L, D)
        total = features.sum(0) if total is None else total + features.sum(0)
        n += len(features)
    mean = total / n
    score, m = 0.0, 0
    for batch in labelled_batches(test_set, batch_size):
        features = teacher(batch["images"])
        score += float(F.cosine_similarity(features, mean.expand_as(features), dim=-1).mean(1).sum())
        m += len(features)
    return score / m


def probe_all(model, train_set, test_set, progress: bool) -> dict:
    """{"linear_cls", "knn_cls", "linear_mean", "knn_mean"}: test top-1 (%) of frozen features."""
    row = {}
    for pool in ("cls", "mean"):
        probe = probe_model(model, train_set, test_set, pool=pool, progress=progress)
        row[f"linear_{pool}"], row[f"knn_{pool}"] = probe.linear.test_top1, probe.knn.top1
    return row


def train_stages(ctx: ReproContext, s: dict, stages: dict) -> tuple:
    """Train (or reuse) the teacher, the tokenizers and both MIM models; their minutes go to `stages`.
    -> (teacher run, {"restart" | "no_restart": tokenizer run}, {"codes" | "pixels": BEiT v2 run})."""
    teacher, stages["teacher"] = timed_train(
        ctx, "mae_demo_fmnist", [*schedule(s["teacher_steps"], s["teacher_batch"]), "train.picture_every=0"],
        "mae_teacher", shared=True)
    variants = {"restart": []} | ({"no_restart": ["model.restart_after=0"]} if s["ablation"] else {})
    tokenizers = {}
    for name, extra in variants.items():
        tokenizers[name], stages[f"vqkd_{name}"] = timed_train(
            ctx, "vqkd_fmnist", [f"model.teacher={teacher}", *schedule(s["vqkd_steps"], s["vqkd_batch"], 1 / 16),
                                 *extra], f"vqkd_{name}")
    beits = {}
    for target in ("codes", "pixels"):
        beits[target], stages[f"beitv2_{target}"] = timed_train(
            ctx, "beitv2_fmnist", [f"model.tokenizer={tokenizers['restart']}", f"model.target={target}",
                                   *schedule(s["beit_steps"], s["beit_batch"])], f"beitv2_{target}")
    return teacher, tokenizers, beits


def evaluate_tokenizers(ctx: ReproContext, tokenizers: dict, test_set) -> dict:
    """name -> usage, codes used, perplexity, teacher cosine (`mimkit eval tokenizer`) on test_set."""
    rows = {}
    for name, run_dir in tokenizers.items():
        model, config = load_model(run_dir)
        note = attach_teacher_if_available(model, config)
        if note:
            ctx.log(note)
        t = evaluate_tokenizer(model, test_set, progress=ctx.progress)
        rows[name] = {"restart_after": config.model.restart_after, "usage": t.usage,
                      "used": round(t.usage * t.codebook_size), "perplexity": t.perplexity,
                      "codebook_size": t.codebook_size, "teacher_cosine": t.teacher_cosine}
        ctx.log(f"tokenizer {name}: usage {100 * t.usage:.1f}%, perplexity {t.perplexity:.1f}, "
                f"teacher cosine {t.teacher_cosine}")
    return rows


def run(ctx: ReproContext) -> Report:
    s = QUICK if ctx.quick else FULL
    report = Report("BEiT v2: the VQ-KD tokenizer's codebook, and code vs pixel targets", name=ctx.name,
                    quick=ctx.quick)
    stages = {}
    teacher, tokenizers, beits = train_stages(ctx, s, stages)

    started = time.time()
    train_set, test_set = ctx.splits(s["train_limit"], s["test_limit"])
    tokenizer_rows = evaluate_tokenizers(ctx, tokenizers, test_set)
    baseline_train, _ = ctx.splits(s["baseline_images"], 1)
    position_cosine = position_mean_cosine(load_teacher(str(teacher)), baseline_train, test_set)
    stages["tokenizer_eval"] = {"minutes": round((time.time() - started) / 60, 2), "reused": False}

    started = time.time()
    probes, models = {}, {}
    for target, run_dir in beits.items():
        models[target] = load_model(run_dir)
        probes[target] = probe_all(models[target][0], train_set, test_set, ctx.progress)
        ctx.log(f"BEiT v2 ({target} target): {probes[target]}")
    probes["random_init"] = probe_all(random_init_like(*models["codes"]), train_set, test_set, ctx.progress)
    probes["teacher"] = probe_all(load_model(teacher)[0], train_set, test_set, ctx.progress)  # what the codes distil
    stages["probes"] = {"minutes": round((time.time() - started) / 60, 2), "reused": False}

    logs = {f"vqkd_{k}": last_logged(v, ("usage", "perplexity", "cosine")) for k, v in tokenizers.items()}
    logs |= {f"beitv2_{k}": last_logged(v, ("loss_mim", "accuracy", "loss_agg", "accuracy_agg"))
             for k, v in beits.items()}
    runs = {"teacher": teacher, **{f"vqkd_{k}": v for k, v in tokenizers.items()},
            **{f"beitv2_{k}": v for k, v in beits.items()}}
    report.results.update(training_logs=logs, tokenizers=tokenizer_rows, position_mean_cosine=position_cosine,
                          probes=probes, stages=stages, sizes=dict(s), runs={k: str(v) for k, v in runs.items()})
    write_report(report, s)
    return report


def write_report(report: Report, s: dict) -> None:
    r = report.results
    stages, toks, probes = r["stages"], r["tokenizers"], r["probes"]
    r["fresh_minutes"] = round(fresh_minutes(stages), 1)

    def took(stage):
        return stage_text(stages[stage])

    report.text(
        f"Setup (Fashion-MNIST, 28 px grey, 4 px patches -> 7x7 grid, seed 0, one CPU thread): teacher `mimkit train "
        f"mae_demo_fmnist train.steps={s['teacher_steps']}` (batch {s['teacher_batch']}, warmup 5%; "
        f"{took('teacher')}, in "
        f"work/shared/mae_teacher); tokenizer `vqkd_fmnist model.teacher=<teacher> train.steps={s['vqkd_steps']}` "
        f"(batch {s['vqkd_batch']}, 512 codes x 32-d, cosine lookup, EMA codebook, k-means init, dead codes "
        f"restarted after 50 "
        f"steps; {took('vqkd_restart')})"
        + (f" and the same with `model.restart_after=0` ({took('vqkd_no_restart')})" if "vqkd_no_restart" in stages
           else "")
        + f"; MIM `beitv2_fmnist model.tokenizer=<tokenizer> train.steps={s['beit_steps']}` "
        f"(batch {s['beit_batch']}, 20 of 49 "
        f"patches block-masked, 128-d x 4 ViT with layer scale, relative position bias and a 2-block aggregation head "
        f"from block 3; {took('beitv2_codes')}) and the same with `model.target=pixels` ({took('beitv2_pixels')}): "
        f"the same network, masking, recipe and steps, its head regressing each hidden patch's per-patch-normalised "
        f"pixels (MSE, MAE's target) instead of predicting the code (cross-entropy). Tokenizer metrics on a "
        f"seeded class-stratified subset of "
        f"{s['test_limit']} test images ({took('tokenizer_eval')}): usage = share of the 512 codes used at least once, "
        f"perplexity = exp(entropy) of the code histogram (512 = perfectly even), teacher cosine = mean cosine of "
        f"the features decoded from the codes vs the teacher's (the training objective); its baseline is the cosine "
        f"of each position's mean teacher feature (over {s['baseline_images']} train images), which a decoder "
        f"ignoring the codes could reach. Probes ({took('probes')}): frozen features of "
        f"seeded class-stratified subsets of {s['train_limit']} "
        f"train and {s['test_limit']} test images, linear probe (BatchNorm + linear, SGD, 30 epochs) and 20-NN, on "
        f"the cls token and the mean patch token (the aggregation head is not used); random init = the same ViT "
        f"untrained. A run from scratch takes about {fresh_minutes(stages):.0f} min (the stages above, reused ones "
        f"at their training time).")
    rows = [[f"VQ-KD, restart_after={t['restart_after']}",
             f"{100 * t['usage']:.1f}% ({t['used']} / {t['codebook_size']})",
             f"{t['perplexity']:.1f}", f"{t['teacher_cosine']:.3f}" if t["teacher_cosine"] is not None else "-"]
            for name, t in toks.items()]
    rows.append(["position mean only", "-", "-", f"{r['position_mean_cosine']:.3f}"])
    report.table(["tokenizer", "codebook usage", "perplexity", "teacher cosine"], rows,
                 caption="VQ-KD tokenizers on the test split:")
    report.plot("codebook_usage.png", {"usage": ([f"restart_after={t['restart_after']}" for t in toks.values()],
                                                 [100 * t["usage"] for t in toks.values()])},
                xlabel="VQ-KD dead-code restart", ylabel="codes used on the test split (%)", kind="bar",
                title="VQ-KD codebook usage (512 codes)")
    names = {"codes": "VQ-KD codes (BEiT v2)", "pixels": "pixels (same ViT)", "random_init": "random init",
             "teacher": "the MAE teacher"}
    report.table(["MIM target", "linear (cls)", "linear (mean)", "k-NN (cls)", "k-NN (mean)"],
                 [[names[k], *(f"{p[key]:.2f}" for key in ("linear_cls", "linear_mean", "knn_cls", "knn_mean"))]
                  for k, p in probes.items()],
                 caption="Test top-1 (%) of the frozen ViTs (the last row: the teacher's own encoder, for reference):")
    short = {"codes": "codes", "pixels": "pixels", "random_init": "random init", "teacher": "MAE teacher"}
    report.plot("probe_by_target.png", {f"linear ({PRIMARY_POOL})": ([short[k] for k in probes],
                                                                     [p[f"linear_{PRIMARY_POOL}"] for p in
                                                                      probes.values()])},
                xlabel="BEiT v2 target (codes / pixels), untrained ViT, the teacher",
                ylabel="linear probe top-1 (%)", kind="bar",
                title="BEiT v2: code vs pixel target (linear probe)")
    logs = r["training_logs"]

    def logged(run, key):  # the last logged value, nan when the run or key is missing
        return logs.get(run, {}).get(key, float("nan"))

    report.text(
        f"Last logged training values: VQ-KD with restarts cosine {logged('vqkd_restart', 'cosine'):.3f}, batch "
        f"perplexity {logged('vqkd_restart', 'perplexity'):.0f}"
        + (f"; without restarts cosine {logged('vqkd_no_restart', 'cosine'):.3f}, batch perplexity "
           f"{logged('vqkd_no_restart', 'perplexity'):.0f}" if "vqkd_no_restart" in logs else "")
        + f"; BEiT v2 (codes) MIM cross-entropy {logged('beitv2_codes', 'loss_mim'):.2f} (ln 512 = 6.24 for a "
        f"uniform guess), masked-code accuracy {100 * logged('beitv2_codes', 'accuracy'):.1f}%; pixel target MIM "
        f"MSE {logged('beitv2_pixels', 'loss_mim'):.3f} (0.94 for predicting each patch's mean: 15 / 16 with the "
        f"unbiased std of 16 pixels).")
    codes, pixels, teacher = probes["codes"], probes["pixels"], probes["teacher"]
    key = f"linear_{PRIMARY_POOL}"
    report.text(
        f"What the code target can carry: the VQ-KD codes distil the teacher, here an MAE trained on pixels for "
        f"{s['teacher_steps']} steps, whose own encoder probes at {teacher['linear_cls']:.1f} (cls) / "
        f"{teacher['linear_mean']:.1f} (mean), against {codes['linear_cls']:.1f} / {codes['linear_mean']:.1f} for "
        f"BEiT v2 on its codes and {pixels['linear_cls']:.1f} / {pixels['linear_mean']:.1f} for the pixel target. "
        + ("The teacher probes no better than the pixel-target ViT (cls), so its codes have little semantics to add. "
           if teacher[key] <= pixels[key] + MARGIN else
           f"The teacher probes above the pixel-target ViT (cls), so part of what it knows is lost on the way (512 "
           f"codes; the MIM model predicts {100 * logged('beitv2_codes', 'accuracy'):.1f}% of the masked ones). ")
        + "The paper's teachers (CLIP, DINO) learned with other objectives from far more data, which a teacher trained "
          "on pixels of the same small data cannot stand in for.")
    add_claims(report)


def verdicts(results: dict) -> dict:
    """usage: the tokenizer with restarts uses >= USAGE_MIN of its codes on the test split;
    restart: it uses >= RESTART_GAIN more than the one without (None without the ablation);
    cosine: its teacher cosine beats the position-mean baseline by > COSINE_GAIN; target: the code
    target's linear probe (PRIMARY_POOL) beats the pixel target's by > MARGIN; pretraining: the
    code target's beats random init by > MARGIN."""
    toks, probes, key = results["tokenizers"], results["probes"], f"linear_{PRIMARY_POOL}"
    main = toks["restart"]
    return {"usage": main["usage"] >= USAGE_MIN,
            "restart": main["usage"] - toks["no_restart"]["usage"] >= RESTART_GAIN if "no_restart" in toks else None,
            "cosine": main["teacher_cosine"] is not None
                      and main["teacher_cosine"] > results["position_mean_cosine"] + COSINE_GAIN,
            "target": probes["codes"][key] > probes["pixels"][key] + MARGIN,
            "pretraining": probes["codes"][key] > probes["random_init"][key] + MARGIN}


def add_claims(report: Report) -> None:
    r = report.results
    v = verdicts(r)
    s = r["sizes"]
    toks, probes, key = r["tokenizers"], r["probes"], f"linear_{PRIMARY_POOL}"
    main = toks["restart"]
    report.claim("a VQ-KD tokenizer distilled from a teacher uses (nearly) all of its codebook",
                 paper="the released tokenizers use 97-100% of their 8192 codes",
                 ours=f"{100 * main['usage']:.1f}% of 512 codes used on the test split, perplexity "
                      f"{main['perplexity']:.0f} (rule: >= {100 * USAGE_MIN:.0f}%)", reproduced=v["usage"])
    if "no_restart" in toks:
        report.claim("without dead-code restarts the codebook collapses on small data",
                     paper="users report 50-90% unused codes on small or custom data; restarting dead codes fixes it",
                     ours=f"{100 * toks['no_restart']['usage']:.1f}% used without restarts vs "
                          f"{100 * main['usage']:.1f}% with (rule: restarts add >= {100 * RESTART_GAIN:.0f} points)",
                     reproduced=v["restart"])
    cos = "n/a" if main["teacher_cosine"] is None else f"{main['teacher_cosine']:.3f}"
    report.claim("the codes carry the teacher's (semantic) features, not just the patch position",
                 paper="the decoder reconstructs the teacher's features from the codes (cosine loss)",
                 ours=f"teacher cosine {cos} vs {r['position_mean_cosine']:.3f} for each position's mean feature "
                      f"(rule: > +{COSINE_GAIN})", reproduced=v["cosine"])
    report.claim("masked prediction of VQ-KD codes learns better representations than a pixel target",
                 paper="semantic VQ-KD targets beat low-level ones (BEiT v1's DALL-E tokens, pixels); ViT-B/16 "
                       "reaches 80.1 linear probe",
                 ours=f"linear ({PRIMARY_POOL}) {probes['codes'][key]:.1f} with codes vs {probes['pixels'][key]:.1f} "
                      f"with pixels, same ViT and steps (mean pool: {probes['codes']['linear_mean']:.1f} vs "
                      f"{probes['pixels']['linear_mean']:.1f}; rule: > +{MARGIN})"
                      + (f"; for reference the MAE teacher, same width / depth / patch, pixel target, "
                         f"{s['teacher_steps']} x {s['teacher_batch']} images: {probes['teacher'][key]:.1f}"
                         if "teacher" in probes else ""), reproduced=v["target"])
    report.claim("BEiT v2 pretraining beats the same ViT at random init under the linear probe",
                 paper="80.1 linear probe (ViT-B/16, 1600 epochs), far above a random encoder",
                 ours=f"linear ({PRIMARY_POOL}) {probes['codes'][key]:.1f} vs {probes['random_init'][key]:.1f} at "
                      f"random init (mean pool: {probes['codes']['linear_mean']:.1f} vs "
                      f"{probes['random_init']['linear_mean']:.1f}; rule: > +{MARGIN})", reproduced=v["pretraining"])
