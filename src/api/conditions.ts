// The condition types and reasons the operator writes into both resources' status (see docs/operator.md): one list,
// used by the reconcilers, the status writers and the tests alike.

export const ConditionType = {
  Ready: 'Ready',
  SecretsResolved: 'SecretsResolved',
  StreamReady: 'StreamReady',
  ReceiverReady: 'ReceiverReady',
  FilterValid: 'FilterValid',
  ConsumerReady: 'ConsumerReady',
  EventTypesMatch: 'EventTypesMatch',
  DispatcherReady: 'DispatcherReady',
  TargetReachable: 'TargetReachable',
  Reconciled: 'Reconciled',
  SpecValid: 'SpecValid',
} as const;
export type ConditionType = (typeof ConditionType)[keyof typeof ConditionType];

export const Reason = {
  Ready: 'Ready',
  Resolved: 'Resolved',
  SecretNotFound: 'SecretNotFound',
  StreamRefused: 'StreamRefused',
  JetStreamUnavailable: 'JetStreamUnavailable',
  Available: 'Available',
  NotDeployed: 'NotDeployed',
  PodsNotReady: 'PodsNotReady',
  ProgressDeadlineExceeded: 'ProgressDeadlineExceeded',
  ScaledToZero: 'ScaledToZero',
  NoFilter: 'NoFilter',
  Compiled: 'Compiled',
  FilterInvalid: 'FilterInvalid',
  SourceNotFound: 'SourceNotFound',
  NoSources: 'NoSources',
  ConsumerNotReady: 'ConsumerNotReady',
  Matching: 'Matching',
  NoMatchingEventTypes: 'NoMatchingEventTypes',
  Paused: 'Paused',
  TargetGone: 'TargetGone',
  Retrying: 'Retrying',
  Delivering: 'Delivering',
  ReconcileFailed: 'ReconcileFailed',
  InvalidSpec: 'InvalidSpec',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];
