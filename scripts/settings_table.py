"""Print docs/settings.md's table from the Settings model (the one documented source)."""

from celrec.settings import Settings

print("| variable | default | meaning |\n|---|---|---|")
for name, field in Settings.model_fields.items():
    print(f"| `CELREC_{name.upper()}` | `{field.default}` | {field.description} |")
