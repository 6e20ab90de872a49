"""The run store: files of finished runs (`runs`) and the leases that keep sweeps apart (`lock`)."""
