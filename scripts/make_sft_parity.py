"""Reference numbers for the SFT step-parity test (trainer/tests/trainer/sft.rs).

Writes trainer/tests/fixtures/sft-parity/: a small random Qwen3 (transformers, float32),
batches.json (packed sequences: ids, loss mask, positions, document lengths; 2 per step)
and reference.json (per step: loss, global grad norm before clipping, lr; final norm of
every parameter). The reference never packs: each document runs alone through
transformers from position 0, which is what a correct document mask must reproduce.
The loss of a step is sum(NLL of trained tokens) / (trained tokens of the whole step),
accumulated over micro-batches of one sequence; then clip_grad_norm_(1.0), then
torch.optim.AdamW with weight decay on matrices only, lr from transformers' cosine
schedule with warmup.

Run with torch + transformers installed (not needed by CI):
    python scripts/make_sft_parity.py
"""
import json, math, pathlib, random
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, get_cosine_schedule_with_warmup

OUT = pathlib.Path(__file__).resolve().parent.parent / "trainer/tests/fixtures/sft-parity"
STEPS, SEQ, VOCAB = 5, 48, 320
OPT = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0, warmup=0.2)


def make_batches(rng):
    steps = []
    for _ in range(STEPS):
        seqs = []
        for _ in range(2):
            ids, mask, pos, lens = [], [], [], []
            while True:
                n = rng.randint(6, 20)
                if sum(lens) + n > SEQ:
                    break
                prompt = rng.randint(2, n - 2)
                doc_mask = [0] * prompt + [1] * (n - prompt)
                # an observation inside the answer is context, not target
                if n - prompt > 6:
                    a = prompt + rng.randint(1, n - prompt - 3)
                    doc_mask[a:a + 2] = [0, 0]
                doc_mask[0] = 0
                ids += [rng.randrange(VOCAB) for _ in range(n)]
                mask += doc_mask
                pos += list(range(n))
                lens.append(n)
            pad = SEQ - len(ids)
            seqs.append(dict(ids=ids + [0] * pad, mask=mask + [0] * pad, positions=pos + [0] * pad, doc_lens=lens))
        steps.append(seqs)
    return steps


def seq_nll(model, s):
    """Sum of NLL over the trained tokens of one packed sequence, document by document."""
    total, start = 0.0, 0
    for n in s["doc_lens"]:
        ids = torch.tensor([s["ids"][start:start + n]])
        m = torch.tensor(s["mask"][start:start + n][1:], dtype=torch.float32)
        logits = model(input_ids=ids, position_ids=torch.arange(n)[None]).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        total = total + (nll * m).sum()
        start += n
    return total


def main():
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False)
    model = Qwen3ForCausalLM(cfg).float()
    model.config._attn_implementation = "eager"
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT / "model", safe_serialization=True)
    batches = make_batches(random.Random(0))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=OPT["lr"], betas=OPT["betas"], eps=OPT["eps"])
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(OPT["warmup"] * STEPS), STEPS)
    steps = []
    for seqs in batches:
        total = sum(sum(s["mask"][1:]) for s in seqs)
        opt.zero_grad()
        loss = 0.0
        for s in seqs:  # accumulation: one sequence per micro-batch
            l = seq_nll(model, s) / total
            l.backward()
            loss += l.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), OPT["clip"]).item()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        steps.append(dict(loss=loss, grad_norm=norm, lr=lr, trained_tokens=total))
        print(steps[-1])
    norms = {n: p.detach().double().norm().item() for n, p in model.named_parameters()}
    (OUT / "batches.json").write_text(json.dumps(dict(seq_len=SEQ, steps=batches)))
    (OUT / "reference.json").write_text(json.dumps(dict(optim=OPT, steps=steps, final_param_norms=norms,
                                                          torch=torch.__version__), indent=1))


if __name__ == "__main__":
    main()
