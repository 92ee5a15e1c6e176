"""Digi-Q stage 1: fine-tune a VLM on the actionability task ("will this action change the screen?").

A thin wrapper of ``digiq-trl train-representation`` (:mod:`digiq_trl.commands.train_representation`).
With no arguments it runs offline on a CPU with the settings of
``examples/configs/representation_tiny.yaml``:

    python examples/train_representation.py                                  # embedded default
    python examples/train_representation.py --config examples/configs/representation_tiny.yaml
    python examples/train_representation.py --model_name_or_path Qwen/Qwen2-VL-2B-Instruct \\
        --dataset_name user/aitw-general-transitions --output_dir qwen2vl-actionability \\
        --merge_adapter false --push_to_hub true
"""

from digiq_trl.commands.train_representation import main


if __name__ == "__main__":
    main()
