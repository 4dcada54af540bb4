"""Offline stand-ins for the Hub repos that TRL's `tests/test_reward_trainer.py` loads.

Each stand-in has the architecture, tokenizer conventions (special tokens, eos/pad, chat template or none) and data
layout (configs, splits, column formats) of the repo it replaces, but is built here from configs, a byte-level BPE
trained on the data, and hand-written rows. Nothing is downloaded. `build(root)` writes them under `root` and a
`manifest.json` mapping each Hub id to its local folder; building again reuses a complete earlier build.
"""

from __future__ import annotations

import json
import os
import shutil

#: Bump when the stand-ins change, so an old build is rebuilt rather than reused.
STANDINS_VERSION = 1

QWEN2_5_TEMPLATE = (
    "{%- if tools -%}"
    "{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' -%}{{ messages[0].content }}"
    "{%- else -%}{{ 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}{%- endif -%}"
    "{{ '\\n\\n# Tools\\n\\n<tools>' }}"
    "{%- for tool in tools -%}{{ '\\n' }}{{ tool | tojson }}{%- endfor -%}"
    "{{ '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' -%}"
    "{{ '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls) -%}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' -%}"
    "{{ '<|im_start|>assistant' }}"
    "{%- if message.content -%}{{ '\\n' + message.content }}{%- endif -%}"
    "{%- for tool_call in message.tool_calls -%}"
    "{%- set call = tool_call.function if tool_call.function is defined else tool_call -%}"
    '{{ \'\\n<tool_call>\\n{"name": "\' + call.name + \'", "arguments": \' + (call.arguments | tojson) + \'}'
    "\\n</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' -%}{{ '<|im_start|>user' }}{%- endif -%}"
    "{{ '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{ '<|im_end|>\\n' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Qwen3's template differs from Qwen2.5's by the think block on assistant turns; the stand-in keeps that trait.
QWEN3_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)

#: A plain chat template used when the TRL checkout's `tests/data/template.jinja` is not at hand.
PATH_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}\n"
)

# (prompt, chosen completion, rejected completion); 17 train rows and 2 test rows, like `trl-internal-testing/zen`,
# so that step counts the tests rely on (e.g. `checkpoint-9` for 3 epochs of batch 8) come out the same.
_ZEN = [
    ("Beautiful is better than", " ugly.", " the sunset."),
    ("Explicit is better than", " implicit.", " a closed door."),
    ("Simple is better than", " complex.", " a quiet morning."),
    ("Complex is better than", " complicated.", " a winter coat."),
    ("Flat is better than", " nested.", " a hilly road."),
    ("Sparse is better than", " dense.", " a full basket."),
    ("Readability", " counts.", " is a river."),
    ("Special cases aren't special enough to", " break the rules.", " buy a boat."),
    ("Although practicality", " beats purity.", " sings at night."),
    ("Errors should never", " pass silently.", " eat breakfast."),
    ("Unless explicitly", " silenced.", " painted blue."),
    ("In the face of ambiguity, refuse the", " temptation to guess.", " second helping of cake."),
    ("There should be one obvious way", " to do it.", " to the beach."),
    ("Although that way may not be obvious at first", " unless you're Dutch.", " without a map of Paris."),
    ("Now is better than", " never.", " the old garden."),
    ("Although never is often better than", " right now.", " a cup of tea."),
    ("If the implementation is hard to explain,", " it's a bad idea.", " call the plumber."),
    ("If the implementation is easy to explain,", " it may be a good idea.", " the cat will sleep."),
    ("Namespaces are one honking great idea,", " let's do more of those!", " said the lighthouse."),
]
_N_TRAIN = 17

_TOOLS = {
    "set_alarm": {
        "type": "function",
        "function": {
            "name": "set_alarm",
            "description": "Sets an alarm at the given time.",
            "parameters": {
                "type": "object",
                "properties": {"time": {"type": "string", "description": "Time of the alarm, HH:MM."}},
                "required": ["time"],
            },
            "return": {"type": "string", "description": "A confirmation."},
        },
    },
    "get_temperature": {
        "type": "function",
        "function": {
            "name": "get_temperature",
            "description": "Returns the temperature in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city."},
                    "unit": {"type": "string", "description": "celsius or fahrenheit."},
                },
                "required": ["city", "unit"],
            },
            "return": {"type": "integer", "description": "The temperature."},
        },
    },
    "send_message": {
        "type": "function",
        "function": {
            "name": "send_message",
            "description": "Sends a text message to a contact.",
            "parameters": {
                "type": "object",
                "properties": {
                    "contact": {"type": "string", "description": "Who to write to."},
                    "text": {"type": "string", "description": "The message."},
                },
                "required": ["contact", "text"],
            },
            "return": {"type": "string", "description": "Delivery status."},
        },
    },
}


def _call(name, arguments, result, answer):
    return [
        {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "name": name, "content": result},
        {"role": "assistant", "content": answer},
    ]


# (question, tools offered, chosen turns, rejected turns): tool calls with differently keyed arguments, plain answers,
# tool results; the `tools` column is a JSON string, as in `trl-internal-testing/toolcall`.
_TOOLCALL = [
    (
        "Wake me up at seven.",
        ["set_alarm"],
        _call("set_alarm", {"time": "07:00"}, "Alarm set", "Your alarm is set for 07:00."),
        _call("set_alarm", {"time": "19:00"}, "Alarm set", "Your alarm is set for 19:00."),
    ),
    (
        "How warm is it in Oslo?",
        ["get_temperature"],
        _call("get_temperature", {"city": "Oslo", "unit": "celsius"}, "4", "It is 4 degrees in Oslo."),
        [{"role": "assistant", "content": "It is very hot in Oslo."}],
    ),
    (
        "Tell Ana I am late.",
        ["send_message", "set_alarm"],
        _call("send_message", {"contact": "Ana", "text": "I am late."}, "delivered", "I told Ana you are late."),
        _call("send_message", {"contact": "Ben", "text": "I am late."}, "delivered", "I told Ben you are late."),
    ),
    (
        "Is it freezing in Quebec?",
        ["get_temperature", "send_message"],
        _call("get_temperature", {"city": "Quebec", "unit": "celsius"}, "-8", "Yes, it is -8 degrees."),
        _call("get_temperature", {"city": "Quebec", "unit": "celsius"}, "-8", "No, it is warm."),
    ),
    (
        "Set an alarm for noon.",
        ["set_alarm", "get_temperature"],
        _call("set_alarm", {"time": "12:00"}, "Alarm set", "Your alarm is set for noon."),
        [{"role": "assistant", "content": "Done, alarm at midnight."}],
    ),
    (
        "Text Mo that dinner is ready.",
        ["send_message"],
        _call("send_message", {"contact": "Mo", "text": "Dinner is ready."}, "delivered", "I texted Mo."),
        _call("send_message", {"contact": "Mo", "text": "Lunch is ready."}, "delivered", "I texted Mo."),
    ),
    (
        "What is the temperature in Lima in fahrenheit?",
        ["get_temperature"],
        _call("get_temperature", {"city": "Lima", "unit": "fahrenheit"}, "68", "It is 68 F in Lima."),
        _call("get_temperature", {"city": "Lima", "unit": "celsius"}, "20", "It is 20 F in Lima."),
    ),
    (
        "Remind me at 6 to call home.",
        ["set_alarm", "send_message"],
        _call("set_alarm", {"time": "18:00"}, "Alarm set", "I will remind you at 18:00."),
        _call("send_message", {"contact": "home", "text": "call"}, "delivered", "I messaged home."),
    ),
    (
        "Send Lee a hello.",
        ["send_message"],
        _call("send_message", {"contact": "Lee", "text": "Hello!"}, "delivered", "I said hello to Lee."),
        [{"role": "assistant", "content": "Lee says hello back."}],
    ),
]
_TOOLCALL_N_TRAIN = 8


def _zen_configs() -> dict[str, list[dict]]:
    rows = {
        "standard_preference": [],
        "conversational_preference": [],
        "standard_implicit_prompt_preference": [],
        "conversational_implicit_prompt_preference": [],
    }
    for prompt, chosen, rejected in _ZEN:
        user = [{"role": "user", "content": prompt}]
        rows["standard_preference"].append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        rows["conversational_preference"].append(
            {
                "prompt": user,
                "chosen": [{"role": "assistant", "content": chosen.strip()}],
                "rejected": [{"role": "assistant", "content": rejected.strip()}],
            }
        )
        rows["standard_implicit_prompt_preference"].append({"chosen": prompt + chosen, "rejected": prompt + rejected})
        rows["conversational_implicit_prompt_preference"].append(
            {
                "chosen": user + [{"role": "assistant", "content": chosen.strip()}],
                "rejected": user + [{"role": "assistant", "content": rejected.strip()}],
            }
        )
    return rows


def _toolcall_rows() -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": question}],
            "chosen": chosen,
            "rejected": rejected,
            "tools": json.dumps([_TOOLS[name] for name in tools]),
        }
        for question, tools, chosen, rejected in _TOOLCALL
    ]


def _write_dataset(folder: str, configs: dict[str, list[dict]], n_train: int) -> None:
    """A Hub-style dataset folder: one parquet file per config and split, configs declared in the README."""
    from datasets import Dataset

    card = ["---", "configs:"]
    for name, rows in configs.items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        card += [f"- config_name: {name}", "  data_files:"]
        for split, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
            Dataset.from_list(part).to_parquet(os.path.join(folder, name, f"{split}-00000-of-00001.parquet"))
            card += [f"  - split: {split}", f"    path: {name}/{split}-*"]
    card += ["---", "", "Offline stand-in built by mars-trl's compat/standins.py.", ""]
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(card))


def _corpus() -> list[str]:
    lines = []
    for prompt, chosen, rejected in _ZEN:
        lines += [prompt + chosen, prompt + rejected]
    lines += [json.dumps(tool) for tool in _TOOLS.values()]
    for question, _, chosen, rejected in _TOOLCALL:
        lines.append(question)
        lines += [json.dumps(message) for message in chosen + rejected]
    lines += ["system user assistant tool You are Qwen, created by Alibaba Cloud. You are a helpful assistant."]
    return lines * 3


def _bpe(special: list[str], vocab_size: int = 700, post_bos: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if post_bos is not None:
        bos_id = tok.token_to_id(post_bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{post_bos} $A", pair=f"{post_bos} $A {post_bos} $B", special_tokens=[(post_bos, bos_id)]
        )
    return tok


def _tokenizers() -> dict:
    from transformers import PreTrainedTokenizerFast

    qwen = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    qwen.add_tokens(["<tool_call>", "</tool_call>"])
    qwen.chat_template = QWEN2_5_TEMPLATE

    qwen3 = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    qwen3.add_tokens(["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"])
    qwen3.chat_template = QWEN3_TEMPLATE

    llama_special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    llama = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(llama_special, post_bos="<|begin_of_text|>"),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
    )
    llama.chat_template = LLAMA3_TEMPLATE

    # Pythia: one special token for bos/eos/unk, no pad token and no chat template.
    neox = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(["<|endoftext|>", "<|padding|>"]),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    return {"qwen2.5": qwen, "qwen3": qwen3, "llama3.2": llama, "neox": neox}


def _init_tiny(model) -> None:
    """Initialisation of TRL's tiny test models: Xavier linear weights, zero biases, N(0, 0.02) embeddings."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _models(tokenizers: dict) -> dict:
    """Hub id -> (model, tokenizer); sizes follow TRL's scripts/generate_tiny_models.py."""
    import torch
    from transformers import (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen2ForSequenceClassification,
        Qwen3MoeConfig,
        Qwen3MoeForCausalLM,
    )

    torch.manual_seed(0)
    decoder = dict(hidden_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)
    qwen, llama, neox = tokenizers["qwen2.5"], tokenizers["llama3.2"], tokenizers["neox"]
    built = {
        "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5": (
            Qwen2ForCausalLM(Qwen2Config(vocab_size=len(qwen), intermediate_size=32, **decoder)).to(torch.bfloat16),
            qwen,
        ),
        "trl-internal-testing/tiny-Qwen3MoeForCausalLM": (
            Qwen3MoeForCausalLM(
                Qwen3MoeConfig(
                    vocab_size=len(qwen),
                    intermediate_size=32,
                    moe_intermediate_size=32,
                    num_experts=4,
                    num_experts_per_tok=2,
                    **decoder,
                )
            ).to(torch.bfloat16),
            qwen,
        ),
        "trl-internal-testing/tiny-LlamaForCausalLM-3.2": (
            LlamaForCausalLM(
                LlamaConfig(
                    vocab_size=len(llama),
                    intermediate_size=32,
                    bos_token_id=llama.bos_token_id,
                    eos_token_id=llama.eos_token_id,
                    **decoder,
                )
            ).to(torch.bfloat16),
            llama,
        ),
        "trl-internal-testing/tiny-GPTNeoXForCausalLM": (
            GPTNeoXForCausalLM(
                GPTNeoXConfig(
                    vocab_size=len(neox),
                    intermediate_size=32,
                    bos_token_id=neox.bos_token_id,
                    eos_token_id=neox.eos_token_id,
                    **decoder,
                )
            ).to(torch.float16),
            neox,
        ),
        "trl-internal-testing/tiny-Qwen2ForSequenceClassification-2.5": (
            Qwen2ForSequenceClassification(
                Qwen2Config(
                    vocab_size=len(qwen),
                    num_labels=1,
                    hidden_size=16,
                    num_attention_heads=4,
                    num_key_value_heads=2,
                    num_hidden_layers=2,
                    intermediate_size=32,
                    pad_token_id=qwen.pad_token_id,
                )
            ).to(torch.bfloat16),
            qwen,
        ),
    }
    for model, _ in built.values():
        _init_tiny(model)
    return built


def _folder(root: str, repo_id: str) -> str:
    return os.path.join(root, *repo_id.split("/"))


def build(root: str, force: bool = False) -> dict[str, str]:
    """Write every stand-in under `root` (once) and return the Hub id -> local folder map."""
    manifest_path = os.path.join(root, "manifest.json")
    if not force and os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        if manifest.get("version") == STANDINS_VERSION and all(os.path.isdir(p) for p in manifest["ids"].values()):
            return manifest["ids"]
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    ids: dict[str, str] = {}

    tokenizers = _tokenizers()
    for repo_id, (model, tokenizer) in _models(tokenizers).items():
        ids[repo_id] = _folder(root, repo_id)
        model.save_pretrained(ids[repo_id])
        tokenizer.save_pretrained(ids[repo_id])
    ids["Qwen/Qwen3-4B"] = _folder(root, "Qwen/Qwen3-4B")
    tokenizers["qwen3"].save_pretrained(ids["Qwen/Qwen3-4B"])  # only its tokenizer (chat template) is used

    ids["trl-internal-testing/zen"] = _folder(root, "trl-internal-testing/zen")
    _write_dataset(ids["trl-internal-testing/zen"], _zen_configs(), _N_TRAIN)
    ids["trl-internal-testing/toolcall"] = _folder(root, "trl-internal-testing/toolcall")
    _write_dataset(ids["trl-internal-testing/toolcall"], {"preference": _toolcall_rows()}, _TOOLCALL_N_TRAIN)

    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump({"version": STANDINS_VERSION, "ids": ids}, handle, indent=2)
    return ids
