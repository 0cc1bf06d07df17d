"""Print docs/settings.md's tables from their one documented source: the trainer and service
Settings (default), or with ``--preset`` the offline evaluation preset."""

import sys

from celrec.presets import Preset
from celrec.settings import Settings

if "--preset" in sys.argv[1:]:
    print("| field | default | meaning |\n|---|---|---|")
    for name, field in Preset.model_fields.items():
        print(f"| `{name}` | `{field.default}` | {field.description} |")
else:
    print("| variable | default | meaning |\n|---|---|---|")
    for name, field in Settings.model_fields.items():
        print(f"| `CELREC_{name.upper()}` | `{field.default}` | {field.description} |")
