from rest_framework import serializers

from builds.models import Account, BuildUsage
from builds.services import current_usage


class LimitsSerializer(serializers.Serializer):
    tier = serializers.CharField()
    priority_class = serializers.CharField()
    timeout_minutes = serializers.IntegerField(help_text="Default and most a build may ask for.")
    tier_max_timeout_minutes = serializers.IntegerField()
    addon_minutes = serializers.IntegerField()
    builds_per_month = serializers.IntegerField(allow_null=True, help_text="null: unlimited")
    max_concurrent = serializers.IntegerField()
    max_bundle_mb = serializers.IntegerField()
    max_source_upload_mb = serializers.IntegerField()


class UsageSerializer(serializers.ModelSerializer):
    class Meta:
        model = BuildUsage
        fields = ["month", "builds_used", "builds_limit", "addon_minutes"]


class AccountSerializer(serializers.ModelSerializer):
    limits = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()

    class Meta:
        model = Account
        fields = ["slug", "name", "tier", "created_at", "blocked", "limits", "usage"]
        read_only_fields = fields

    def get_limits(self, account) -> LimitsSerializer:
        return LimitsSerializer(account.effective_limits().as_dict()).data

    def get_usage(self, account) -> UsageSerializer:
        return UsageSerializer(current_usage(account)).data
