#!/usr/bin/env bash
# The end-to-end suites again, on the same assertions, against the AWS shape
# (PURCHASE_TEST_TARGET=aws-local): the real function binaries behind the API
# Gateway shim and the Step Functions endpoint, tables on moto. A step of
# scripts/test.sh, which starts moto (AWS_TEST_ENDPOINT) and builds the
# function binaries first.
#
# Tests are selected by exact name, and each suite must run exactly as many
# as listed: a renamed test fails this step instead of silently dropping out.
# Not listed, because they look inside the in-process orchestrator (the
# reconciler run by hand, a wrapped workflow or store port, its running
# executions), which the AWS shape has no equivalent of:
#   lifecycle:  a_retried_review_delivers_the_decision_the_first_attempt_could_not,
#               steps_do_nothing_on_a_purchase_failed_before_they_ran
#   operations: a_start_that_failed_ambiguously_is_not_declared_failed_and_ends_once,
#               the_reconciler_starts_a_purchase_whose_workflow_never_started,
#               a_purchase_stranded_by_a_process_that_died_before_its_first_checkpoint_is_reconciled,
#               a_callback_that_is_refused_fails_loudly_and_keeps_the_token
#   runs:       express_runs_cannot_be_described_or_redriven_and_a_duplicate_start_runs_harmlessly,
#               the_reconciler_replaces_lost_express_runs_then_flags_the_purchase
#   and a_cancel_during_a_slow_provisioning_takes_back_what_was_delivered, which
#   cancels "while provisioning" right after the capture: here the cancel lands
#   while ProvisionProducts' process starts, before anything is delivered.
# The runs suite's tests run each case on both workflow types, so the shape
# runs its purchase machine as EXPRESS there too (WorkflowType=EXPRESS).
#
# `cargo test --workspace`, as scripts/test.sh's passes: the same feature set,
# so nothing is built again.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${AWS_TEST_ENDPOINT:?set it to the moto server address: scripts/test.sh starts moto}"
export PURCHASE_TEST_TARGET=aws-local

declare -A suites
suites[api]="
  create_answers_201_with_location_and_get_shows_the_spec_fields
  every_invalid_create_is_a_400_naming_the_field_and_stores_nothing
  unknown_ids_answer_404_on_every_endpoint
  update_changes_products_and_address_and_honours_if_match
  update_of_a_completed_purchase_is_a_409
  cancel_is_idempotent
  customers_cannot_see_or_touch_each_others_purchases
  requests_without_valid_credentials_or_scope_are_refused
  listing_is_newest_first_paginated_and_filtered
  purchases_survive_a_restart
  unknown_routes_answer_json_404"
suites[workflow]="
  happy_path_completes_with_every_status_telling_the_same_story
  digital_only_purchase_needs_no_shipping
  out_of_stock_fails_without_reserving_or_charging_anything
  declined_payment_releases_stock
  flaky_payment_is_retried_then_completes_with_one_charge
  provisioning_failure_refunds_and_releases
  cancel_before_reservation_holds_nothing
  cancel_after_reservation_releases_stock
  cancel_after_capture_refunds
  cancel_of_a_completed_purchase_is_refused
  parallel_purchases_never_oversell
  restart_mid_workflow_resumes_from_the_last_completed_state"
suites[rules]="
  a_reject_violation_rejects_and_the_workflow_compensates
  a_hold_parks_the_workflow_until_approved
  a_rejected_review_compensates
  cancelling_a_held_purchase_releases_the_waiting_workflow
  passing_rules_leave_the_purchase_where_it_was
  max_purchases_per_customer_counts_the_customers_recent_purchases
  rules_on_a_terminal_purchase_are_a_409
  invalid_rules_are_400s_naming_the_rule_and_parameter_and_change_nothing
  only_admins_apply_rules_or_review
  rule_sets_are_managed_by_admins
  the_default_rule_set_is_the_workflows_first_step"
suites[idempotency]="
  a_retried_create_returns_the_first_response_and_charges_once
  concurrent_duplicates_create_one_purchase
  reusing_a_key_for_a_different_request_is_a_422
  keys_belong_to_one_customer
  a_retried_cancel_replays_its_first_answer
  malformed_keys_are_400s"
suites[lifecycle]="
  rules_are_not_bypassed_by_a_later_put_of_the_address
  rules_are_not_bypassed_by_a_later_put_of_the_products
  rules_are_not_bypassed_after_an_admin_approved_a_held_purchase
  a_rule_rejecting_a_purchase_parked_in_review_wakes_the_workflow
  customers_read_no_stock_levels_provider_bodies_or_sdk_messages
  a_put_of_products_before_the_reservation_is_what_gets_reserved
  an_idempotency_key_does_not_replay_an_answer_that_says_retry
  the_timeline_stays_bounded_however_often_a_purchase_changes"
suites[operations]="
  lines_delivered_before_a_provisioning_failure_are_revoked
  a_revocation_that_keeps_failing_needs_attention_until_redriven
  a_refund_that_keeps_failing_needs_attention_until_redriven"
suites[runs]="
  an_approved_hold_continues_in_the_next_run_where_it_was_held
  a_rejected_or_cancelled_hold_is_undone_by_the_next_run
  a_hold_nobody_reviews_in_time_is_rejected_and_undone
  a_redrive_resumes_a_standard_run_and_starts_a_new_express_one"

total=0
for suite in api workflow rules idempotency lifecycle operations runs; do
  read -r -a names <<< "$(echo ${suites[$suite]})"
  log=$(mktemp)
  cargo test --workspace --test "$suite" -- --exact "${names[@]}" 2>&1 | tee "$log"
  passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | tail -1)
  rm -f "$log"
  if [ "${passed:-0}" -ne "${#names[@]}" ]; then
    echo "aws-local: suite $suite ran ${passed:-0} tests, ${#names[@]} are listed (renamed or removed?)" >&2
    exit 1
  fi
  total=$((total + passed))
done
echo "aws-local: $total end-to-end tests passed against the AWS shape"
