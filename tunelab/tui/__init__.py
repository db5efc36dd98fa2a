"""The Textual front end: screens and widgets only; the work happens in engine/stores/finetune."""
