from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin

from agents.harnesses import harness_ids
from pool.models import PoolTarget


class PoolTargetForm(forms.ModelForm):
    class Meta:
        model = PoolTarget
        fields = ("harness_id", "target")

    def clean_harness_id(self) -> str:
        harness = self.cleaned_data["harness_id"]
        if harness not in harness_ids():
            raise forms.ValidationError(f"unknown harness (known: {', '.join(harness_ids())})")
        return harness

    def clean_target(self) -> int:
        target = self.cleaned_data["target"]
        if target > settings.LAP_POOL_MAX:
            raise forms.ValidationError(f"must be at most LAP_POOL_MAX ({settings.LAP_POOL_MAX})")
        return target


@admin.register(PoolTarget)
class PoolTargetAdmin(admin.ModelAdmin):
    """Targets set here take effect at the next top-up (every minute, or after a claim)."""

    form = PoolTargetForm
    list_display = ("harness_id", "target", "updated_at")
