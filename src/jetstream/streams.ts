import { isDeepStrictEqual } from 'node:util';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import type { ProviderEndpointSpec } from '../api/provider-endpoint.ts';
import { dedupWindow } from '../providers/presets.ts';
import { durationNanos } from '../runtime/duration.ts';
import { duplicateStream, duplicateSubjects, endpointStream, endpointSubjects } from './layout.ts';

/**
 * The stream of one ProviderEndpoint. Limits retention: every subscription reads every event, and events that
 * arrive before any subscription exists are kept (interest retention would drop them).
 */
export function endpointStreamConfig(
  namespace: string,
  name: string,
  spec: Pick<ProviderEndpointSpec, 'provider' | 'stream' | 'dedup'>,
): Partial<StreamConfig> & { name: string } {
  const maxAge = durationNanos(spec.stream.maxAge);
  return {
    name: endpointStream(namespace, name),
    description: `Hookyard events of ProviderEndpoint ${namespace}/${name}`,
    subjects: [endpointSubjects(namespace, name)],
    retention: RetentionPolicy.Limits,
    storage: spec.stream.storage === 'memory' ? StorageType.Memory : StorageType.File,
    num_replicas: spec.stream.replicas,
    max_age: maxAge,
    duplicate_window: Math.min(durationNanos(dedupWindow(spec)), maxAge),
    discard: DiscardPolicy.Old,
    allow_direct: true,
  };
}

/** The endpoint's duplicate records (layout.ts), kept like its events: a count per event for as long as the event. */
export function duplicateStreamConfig(
  namespace: string,
  name: string,
  spec: Pick<ProviderEndpointSpec, 'stream'>,
): Partial<StreamConfig> & { name: string } {
  return {
    name: duplicateStream(namespace, name),
    description: `Hookyard duplicates answered by ProviderEndpoint ${namespace}/${name}`,
    subjects: [duplicateSubjects(namespace, name)],
    retention: RetentionPolicy.Limits,
    storage: spec.stream.storage === 'memory' ? StorageType.Memory : StorageType.File,
    num_replicas: spec.stream.replicas,
    max_age: durationNanos(spec.stream.maxAge),
    max_msgs: 1_000_000,
    discard: DiscardPolicy.Old,
  };
}

/** The endpoint's streams: its events, and the duplicates its receiver answered. */
export async function ensureEndpointStreams(
  jsm: JetStreamManager,
  namespace: string,
  name: string,
  spec: Pick<ProviderEndpointSpec, 'provider' | 'stream' | 'dedup'>,
) {
  const info = await ensureStream(jsm, endpointStreamConfig(namespace, name, spec));
  await ensureStream(jsm, duplicateStreamConfig(namespace, name, spec));
  return info;
}

/**
 * Creates the stream, or updates it in place when its config differs: a stream is never deleted and recreated, so
 * no event is lost.
 */
export async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }) {
  try {
    const existing = await jsm.streams.info(config.name);
    if (configHolds(existing.config, config)) return existing;
    return await jsm.streams.update(config.name, config);
  } catch (err) {
    if (isStreamNotFound(err)) return await jsm.streams.add(config);
    throw err;
  }
}

/** Whether JetStream answered that the stream does not exist. */
export const isStreamNotFound = (err: unknown) =>
  err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;

/** Deletes a stream; one that is already gone is fine. */
export async function deleteStream(jsm: JetStreamManager, name: string): Promise<void> {
  try {
    await jsm.streams.delete(name);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
  }
}

/**
 * Whether a stream or consumer config already has every wanted value. The server keeps a single filter subject
 * as `filter_subject`, so filters are compared as lists.
 */
export function configHolds(existing: object, wanted: object): boolean {
  const have = existing as Record<string, unknown>;
  const filters = (c: Record<string, unknown>) =>
    (c.filter_subjects as string[] | undefined) ?? (c.filter_subject ? [c.filter_subject] : []);
  return Object.entries(wanted).every(([key, value]) =>
    key === 'filter_subjects' ? isDeepStrictEqual(filters(have), value) : isDeepStrictEqual(have[key], value),
  );
}
