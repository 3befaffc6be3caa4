"""The OpenMetrics exposition of kvmtop: the exported families (`metrics`), a tick's
series (`points`) and their text (`encode`). Pure: `kvmtop serve` and `kvmtop export`
do the I/O."""
