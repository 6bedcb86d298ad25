# Shipped example: the scaling decision of a Grafana alert, as Terraform variables and outputs.
# No providers, so it runs offline (`init` needs no registry). In real use, replace the outputs
# with the resources that scale your service (an autoscaling group's desired capacity, ...).
# The workspace is the alert's `env` label: each environment keeps its own state.

variable "service" {
  type        = string
  default     = "api"
  description = "The service to scale (the alert's `service` label; the contract's example rule passes none)"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}$", var.service))
    error_message = "Service must be a lowercase name (letters, digits, dashes)."
  }
}

variable "replicas" {
  type        = number
  description = "Desired replica count (the alert's `replicas` label)"

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 20 && can(regex("^[0-9]+$", tostring(var.replicas)))
    error_message = "Replicas must be a whole number from 1 to 20."
  }
}

variable "reason" {
  type        = string
  default     = ""
  description = "Why (the alert's summary annotation)"
}

output "service" {
  value = var.service
}

output "replicas" {
  value = var.replicas
}

output "environment" {
  value = terraform.workspace
}

output "reason" {
  value = var.reason
}
