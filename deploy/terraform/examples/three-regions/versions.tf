terraform {
  required_version = ">= 1.0.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}

# One provider configuration per AWS region. The Strata region names (eu, us, ap) are fixed by
# these aliases; the AWS regions behind them are variables.
provider "aws" {
  alias  = "eu"
  region = var.aws_region_eu
}

provider "aws" {
  alias  = "us"
  region = var.aws_region_us
}

provider "aws" {
  alias  = "ap"
  region = var.aws_region_ap
}
