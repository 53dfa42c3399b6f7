"""The built-in task plugins of finetune-kit, registered through the ``finetune_kit.tasks``
entry points exactly as a third-party plugin is."""
