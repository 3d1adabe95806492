# No provider: this module only renders text, so `terraform validate` (and the offline render
# test in scripts/check-deploy.sh) can run it without a provider registry.
terraform {
  required_version = ">= 1.0.0"
}
