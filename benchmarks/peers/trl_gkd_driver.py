"""TRL's ``GKDTrainer`` on seedrl's benchmark spec: timing, first-step loss and peak memory.

Runs inside the TRL peer virtualenv (made by ``benchmarks/gkd_vs_trl.py --setup``), never with
seedrl importable; ``gkd_vs_trl.py`` writes the spec and reads the result:

    <venv>/bin/python trl_gkd_driver.py SPEC.json LMBDA RESULT.json

The spec holds the models' folders (loaded by ``from_pretrained``), the examples already
tokenized by seedrl (prompt ids, completion ids incl. EOS: TRL's own ``DataCollatorForChatML``
takes them as ``input_ids`` + ``completion_mask``, so both systems see the same token ids),
the loss-check batch, and the settings. TRL runs at its fastest CPU settings: fp32, no
gradient checkpointing (``SFTConfig`` turns it on by default), dataloader workers 0, no
pinning, dropout off (``disable_dropout``), logging and saving off during the run, the
same torch intra-op threads as seedrl.

Result: seconds per update (median of the intervals between step ends after the warm-up
steps; and their mean), student (completion) tokens per update and per (median) second, the first-step loss of the
check batch (``compute_loss`` before any update; and the same ``generalized_jsd_loss`` on
logits computed with position ids from the attention mask, see below), and the process's
RSS high-water mark.

TRL's collator pads ``input_ids`` on the left and ``compute_loss`` calls the models with no
``position_ids``; GPT-2 then numbers positions from the first (padding) column, so a padded
row's logits are those of a shifted sequence. Hence the two first-step losses: TRL's as it
trains, and the loss function alone on correctly positioned logits.
"""

import json
import resource
import statistics
import sys
import tempfile
import time

import torch


def main(spec_path: str, lmbda: float, result_path: str) -> None:
    spec = json.loads(open(spec_path, encoding="utf-8").read())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tok = AutoTokenizer.from_pretrained(spec["student"])

    def example(prompt: list, completion: list) -> dict:
        """Pre-tokenized for TRL's collator (the ``prompt`` text only spares it a chat template)."""
        return {"prompt": tok.decode(prompt), "input_ids": prompt + completion,
                "completion_mask": [0] * len(prompt) + [1] * len(completion)}

    rows = [example(p, c) for p, c in spec["rows"]]
    student = AutoModelForCausalLM.from_pretrained(spec["student"], dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(spec["teacher"], dtype=torch.float32)
    steps = spec["warmup"] + spec["steps"]
    with tempfile.TemporaryDirectory() as out:
        args = GKDConfig(
            output_dir=out, per_device_train_batch_size=spec["prompts_per_step"], gradient_accumulation_steps=1,
            max_steps=steps, learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
            max_grad_norm=spec["grad_clip"], optim="adamw_torch", weight_decay=0.0, adam_epsilon=1e-8,
            lmbda=lmbda, beta=spec["beta"], temperature=spec["temperature"], max_new_tokens=spec["max_new_tokens"],
            seq_kd=False, disable_dropout=True, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
            dataloader_num_workers=0, dataloader_pin_memory=False, logging_steps=steps + 1, save_strategy="no",
            report_to="none", seed=spec["seed"], max_length=None,
        )
        ends, cpu, tokens = [], [], []

        class Times(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                ends.append(time.perf_counter())
                cpu.append(time.process_time())

        trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, processing_class=tok,
                             train_dataset=Dataset.from_list(rows), callbacks=[Times()])
        compute_loss = trainer.compute_loss

        def counting(model, inputs, *a, **k):  # after on-policy generation: the completion tokens trained on
            tokens.append(int((inputs["labels"][:, 1:] != -100).sum()))
            return compute_loss(model, inputs, *a, **k)

        check = trainer.data_collator([example(p, c) for p, c in spec["check"]])
        with torch.no_grad():
            first_loss = float(compute_loss(trainer.model, check))
            # the same loss function on logits computed with position ids from the attention mask: the
            # collator pads on the left and compute_loss passes no position ids, which shifts the
            # positions of padded rows in absolute-position models such as GPT-2
            pos = (check["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = [m(input_ids=check["input_ids"], attention_mask=check["attention_mask"], position_ids=pos).logits[:, :-1]
                      for m in (trainer.model, trainer.teacher_model)]
            positioned_loss = float(trainer.generalized_jsd_loss(*logits, labels=check["labels"][:, 1:], beta=args.beta))
            padded_rows = int((check["attention_mask"][:, 0] == 0).sum())
        trainer.compute_loss = counting
        ends.append(time.perf_counter())
        cpu.append(time.process_time())
        trainer.train()
    w = spec["warmup"]
    intervals = [b - a for a, b in zip(ends[w:-1], ends[w + 1:])]
    measured_tokens = sum(tokens[w:])  # tokens[k - 1]: update k; intervals: updates w + 1 .. end
    json.dump({
        "system": "trl", "lmbda": lmbda, "updates": len(ends) - 1, "first_step_loss": first_loss,
        "first_step_loss_position_ids": positioned_loss, "check_rows_left_padded": padded_rows,
        "s_per_update": statistics.median(intervals), "s_per_update_mean": statistics.mean(intervals),
        "cpu_s_per_update": (cpu[-1] - cpu[w]) / len(intervals), "tokens_per_update": measured_tokens / len(intervals),
        "tokens_per_s": measured_tokens / len(intervals) / statistics.median(intervals),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "settings": "GKDTrainer: fp32, gradient_checkpointing=False, dataloader_num_workers=0, pin_memory=False, "
                    f"disable_dropout=True, adamw_torch (weight decay 0), constant lr, torch threads {spec['threads']}",
    }, open(result_path, "w", encoding="utf-8"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
