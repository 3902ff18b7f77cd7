"""Virt drivers behind one small protocol (Nova's virt driver subset): fake, libvirt, kubevirt."""
