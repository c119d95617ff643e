// What KVM does when the guest toggles CR0.WP or enters/leaves SMM, version by
// version (seed 002: Mathias Krause's CR0.WP series, Sean Christopherson on
// the TDP MMU; KVM arch/x86/kvm/x86.c kvm_set_cr0 / kvm_post_set_cr0,
// arch/x86/kvm/mmu/mmu.c kvm_mmu_reset_context / kvm_mmu_load,
// arch/x86/kvm/mmu/tdp_mmu.c root refcounts, arch/x86/kvm/vmx/vmx.c CR0
// guest/host mask). Each policy is a set of switches; a policy that needs
// another's switch to make sense says so in `requires`, as the shadow-MMU
// policies do (src/kvm/policy.ts).
//
// The switches apply to the direct MMUs (tdp_enabled): the TDP MMU and the
// legacy direct MMU. None reaches shadow paging, whose roles keep CR0.WP in
// every version (it decides SPTE rights) and whose roots stay hashed.

import { show } from "../validate.js";

export interface Cr0WpPolicy {
  readonly name: string;
  readonly title: string;
  /**
   * The direct (EPT) root role carries the guest's CR0.WP (v5.10: page_role_for_level
   * copied mmu_role.base, cr0_wp and nxe included). Cleared by Paolo Bonzini's
   * 2ba676774dfc "KVM: x86/mmu: cleanup computation of MMU roles for two-dimensional
   * paging" (v5.19; the merged part of his 2022 role series): the TDP root role fixes
   * cr0_wp = 1 and efer_nx = 1, so every WP value shares one root. A toggle still
   * resets the MMU and unloads the root (kvm_mmu_reset_context kept kvm_mmu_unload:
   * the series' "do not unload MMU roots on all role changes" patch was not merged);
   * the tree survives only if another vCPU holds a reference (edbdb43fc96b's message).
   */
  readonly wpInDirectRootRole: boolean;
  /**
   * TDP MMU roots start with refcount 2, one reference held by the MMU until the
   * root is invalidated, so a vCPU unloading a root never frees it (Sean
   * Christopherson, edbdb43fc96b "KVM: x86/mmu: Preserve TDP MMU roots until they
   * are explicitly invalidated").
   */
  readonly preserveTdpRoots: boolean;
  /**
   * Krause p1 (Paolo, 2fdcc1b32418 "KVM: x86/mmu: Avoid indirect call for get_cr3"):
   * no retpolined indirect call per guest-pgd read. Not charged: get_guest_pgd runs
   * on KVM's software guest walks (emulation, shadow-root allocation), which the
   * direct-MMU runs here never make; listed so the policy names the patch.
   */
  readonly directGetCr3: boolean;
  /**
   * Krause p2 (01b31714bd90 "KVM: x86: Do not unload MMU roots when only toggling
   * CR0.WP with TDP enabled"): a WP-only change with TDP runs kvm_init_mmu, no reset.
   */
  readonly wpOnlyReinit: boolean;
  /** Krause p3 ("KVM: x86: Ignore CR0.WP toggles in non-paging mode"): a WP-only change with CR0.PG = 0 does nothing to the MMU. */
  readonly ignoreWpNonPaging: boolean;
  /**
   * Krause p4-6 (fb509f76acc8 "KVM: VMX: Make CR0.WP a guest owned bit", with Sean's
   * "Refresh CR0.WP prior to checking for emulated permission faults"): under EPT
   * on VMX, CR0.WP is in the CR0 guest/host mask's guest-owned bits: no VM exit.
   */
  readonly wpGuestOwned: boolean;
}

type Switches = Omit<Cr0WpPolicy, "name" | "title">;

const V5_10: Switches = {
  wpInDirectRootRole: true, preserveTdpRoots: false,
  directGetCr3: false, wpOnlyReinit: false, ignoreWpNonPaging: false, wpGuestOwned: false,
};

const KRAUSE_P1_3: Partial<Switches> = { directGetCr3: true, wpOnlyReinit: true, ignoreWpNonPaging: true };

/** Every CR0.WP policy by name (the names are the `vmmu run cr0wp --policy` contract). */
export const CR0WP_POLICIES: Record<string, Cr0WpPolicy & { requires: string[] }> = {};

function define(name: string, title: string, sw: Partial<Switches>, requires: string[] = []): void {
  CR0WP_POLICIES[name] = { name, title, ...V5_10, ...sw, requires };
}

define("baseline", "v5.10: CR0.WP in the root role; every toggle exits, resets the MMU and unloads every root; TDP roots die at refcount 0", {});
define("keep-roots", "Bonzini 2022 (2ba676774dfc, v5.19): the TDP root role fixes CR0.WP = 1, all WP values share one root; a toggle still unloads it", {
  wpInDirectRootRole: false,
});
define("preserve-roots", "Christopherson 2023: TDP roots start at refcount 2 and live until invalidated", { preserveTdpRoots: true });
define("krause-p1-3", "Krause 2023 p1-3: direct get_cr3, WP-only toggle re-inits the MMU without unloading (TDP), WP toggles ignored with paging off", KRAUSE_P1_3);
define("krause2023", "Krause 2023, whole series: p1-3 + CR0.WP guest-owned under EPT on VMX (no exit)", { ...KRAUSE_P1_3, wpGuestOwned: true });

/** The CR0.WP policy called `name`; throws a clear error listing the names otherwise. */
export function cr0WpPolicyByName(name: string): Cr0WpPolicy {
  if (typeof name !== "string") throw new TypeError(`vmmu: policy must be a CR0.WP policy name, got ${show(name)}`);
  const p = Object.hasOwn(CR0WP_POLICIES, name) ? CR0WP_POLICIES[name] : undefined;
  if (!p) throw new RangeError(`vmmu: unknown CR0.WP policy '${name}' (one of: ${Object.keys(CR0WP_POLICIES).join(", ")})`);
  return p;
}
