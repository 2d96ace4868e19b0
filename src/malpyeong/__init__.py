"""malpyeong: fine-tune, predict, ensemble and submit for the 국립국어원 AI 말평 dialogue tasks."""

__version__ = "0.1.0"
