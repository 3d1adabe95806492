output "user_data" {
  description = "The rendered cloud-init user data (#cloud-config YAML)."
  value       = local.user_data
}

output "env" {
  description = "The ETCD_* variables written to /etc/strata/etcd.env."
  value       = local.env
}
