"""``TransformersModel``: any Hugging Face transformers model, picked by pipeline task.

    model = TransformersModel("bert-base-uncased", task="fill-mask")     # AutoModelForMaskedLM
    model = TransformersModel(path)              # task read from the checkpoint's architecture
    with model.trace("Paris is the [MASK] of France."):
        logits = model.output.logits.save()
    with model.pipe("Paris is the [MASK] of France.") as tracer:
        guesses = tracer.result.save()           # the pipeline's decoded output

``task`` picks the auto class that loads the weights (``AutoModelForMaskedLM`` for
``"fill-mask"``, ...); without one, the class named in the checkpoint's ``architectures`` loads it
and ``task`` is the pipeline task that class serves (None if none does). ``tokenizer``,
``processor``, ``image_processor``, ``feature_extractor`` are adopted when given (the tokenizer is
loaded from the checkpoint otherwise). Inputs, ``generate``, meta loading, ``dispatch``, ``peft``,
``tokenizer_kwargs``, ``rename`` and ``envoys`` work as for :class:`LanguageModel` (which is
``TransformersModel`` fixed to causal language modelling); ``pipe`` runs the task's pipeline.
"""
from typing import Any, Dict, Optional, Union

import torch

from .language import LanguageModel
from .pipeline import PipelineMixin

# Pipeline tasks and the transformers auto-model mapping whose classes serve them, in the order a
# checkpoint's architecture is looked up (a class in several mappings gets the first task).
TASK_MAPPINGS = (
    ("text-generation", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("fill-mask", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    ("text-classification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("token-classification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    ("image-text-to-text", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    ("image-classification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ("audio-classification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    ("automatic-speech-recognition", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    ("automatic-speech-recognition", "MODEL_FOR_CTC_MAPPING_NAMES"),
    ("feature-extraction", "MODEL_MAPPING_NAMES"),
)


class TransformersModel(PipelineMixin, LanguageModel):
    """A Hugging Face transformers model for any pipeline task, wrapped for tracing."""

    task: Optional[str] = None

    def __init__(self, repo_id_or_module: Union[str, torch.nn.Module], *args, task: Optional[str] = None,
                 tokenizer: Any = None, processor: Any = None, image_processor: Any = None,
                 feature_extractor: Any = None, **kwargs) -> None:
        for name, value in (("processor", processor), ("image_processor", image_processor),
                            ("feature_extractor", feature_extractor)):
            self.__dict__[name] = value
        if task is not None:
            from transformers.pipelines import check_task

            task = check_task(task)[0]  # aliases: "sentiment-analysis" -> "text-classification"
        self.__dict__["task"] = task
        if tokenizer is None and processor is not None:
            tokenizer = getattr(processor, "tokenizer", None)
        super().__init__(repo_id_or_module, *args, tokenizer=tokenizer, **kwargs)

    def _default_automodel(self, model: Union[str, torch.nn.Module], kwargs: Dict[str, Any]):
        """The task's auto class, else the checkpoint's own architecture class (setting ``task``)."""
        import transformers

        task = self.__dict__.get("task")
        if task is not None:
            from transformers.pipelines import check_task

            classes = check_task(task)[1].get("pt") or ()
            if not classes:
                raise ValueError(f"The pipeline task {task!r} has no PyTorch model class to load.")
            return classes[0]
        if isinstance(model, torch.nn.Module):
            architecture = type(model).__name__
        else:
            config = transformers.AutoConfig.from_pretrained(
                model, **{k: kwargs[k] for k in ("revision", "trust_remote_code", "token") if k in kwargs})
            names = getattr(config, "architectures", None) or []
            if not names:
                raise ValueError(
                    f"Can't tell which model class {model!r} holds: its config names no architecture. "
                    f"Pass `task=` (e.g. 'text-generation', 'fill-mask') or `automodel=`.")
            architecture = names[0]
        self.__dict__["task"] = infer_task(architecture)
        if isinstance(model, torch.nn.Module):
            return None
        cls = getattr(transformers, architecture, None)
        if cls is None:
            raise ValueError(
                f"{model!r} holds a {architecture}, which this transformers version doesn't have. "
                f"Pass `automodel=` (with `trust_remote_code=True` for custom code) or `task=`.")
        return cls

    def _tokenizer_defaults(self) -> Dict[str, Any]:
        # Left padding for generation; other tasks keep the tokenizer's own padding side.
        return super()._tokenizer_defaults() if self.task == "text-generation" else {}


def infer_task(architecture: str) -> Optional[str]:
    """The pipeline task a model class name serves (``"BertForMaskedLM"`` -> ``"fill-mask"``)."""
    from transformers.models.auto import modeling_auto

    for task, mapping in TASK_MAPPINGS:
        for value in getattr(modeling_auto, mapping, {}).values():
            if architecture == value or (isinstance(value, (tuple, list)) and architecture in value):
                return task
    return None
