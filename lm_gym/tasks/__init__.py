"""Tasks: where prompts come from and how the finished text is scored."""

from lm_gym.tasks.base import CustomReward, Prompt, Task, Tokenizer, ToyTokenizer
from lm_gym.tasks.toy import AdditionTask, CopyTask, KeywordToyTask, ParenthesesTask, ReverseTask

__all__ = [
    "AdditionTask",
    "CopyTask",
    "CustomReward",
    "KeywordToyTask",
    "ParenthesesTask",
    "Prompt",
    "ReverseTask",
    "Task",
    "Tokenizer",
    "ToyTokenizer",
]
