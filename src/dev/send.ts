// hookyard send <provider> --url URL: sends a provider's documented sample webhooks, signed the way it signs.
import { readFileSync } from 'node:fs';
import { type ProviderName, providerNames } from '../api/provider-endpoint.ts';
import { sendCommand } from '../commands.ts';
import { providerSignature, type Sample, samples } from '../providers/samples.ts';
import { parseFlags, UsageError } from '../runtime/flags.ts';

/** Sends one sample to an endpoint URL (its route appended); returns the status and body of the answer. */
export async function sendSample(
  provider: ProviderName,
  url: string,
  sample: Sample,
  options: { secret?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: string }> {
  const target = new URL(url);
  if (sample.route) target.pathname = `${target.pathname.replace(/\/$/, '')}/${sample.route}`;
  const headers: Record<string, string> = {
    ...(sample.contentType ? { 'content-type': sample.contentType } : {}),
    ...sample.headers,
    ...(options.secret && !sample.unsigned
      ? providerSignature(provider, options.secret, sample.body, sample.headers)
      : {}),
    ...options.headers,
  };
  const res = await fetch(target, { method: 'POST', body: new Uint8Array(sample.body), headers }).catch((err) => {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`cannot reach ${target.href}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
  });
  return { status: res.status, body: await res.text() };
}

/** One line per sample, by provider: what `--sample` picks from. */
function listSamples(only?: ProviderName): string {
  return Object.entries(samples)
    .filter(([provider]) => !only || provider === only)
    .flatMap(([provider, list]) => (list ?? []).map((sample) => `${provider.padEnd(18)} ${sample.name}`))
    .join('\n');
}

export async function main(args: string[]): Promise<void> {
  const flags = parseFlags(sendCommand, args);
  if (!flags) return;
  const { values, positionals } = flags;
  const provider = positionals[0] as ProviderName | undefined;
  const known = Object.keys(samples);
  if (provider && !providerNames.includes(provider)) {
    throw new UsageError(`unknown provider "${provider}": type one of ${known.join(', ')}`);
  }
  if (values.list) {
    console.log(listSamples(provider));
    return;
  }
  if (!provider) throw new UsageError(`which provider? type one of ${known.join(', ')}, such as hookyard send proign`);
  if (!values.url) throw new UsageError(`--url is required: ${sendCommand.flags.url.description}`);
  if (!URL.canParse(values.url))
    throw new UsageError(`--url "${values.url}" is not a URL: ${sendCommand.flags.url.description}`);
  const list = (samples[provider] ?? []).filter((s) => !values.sample || s.name.includes(values.sample));
  if (list.length === 0)
    throw new UsageError(`no sample of ${provider} matches "${values.sample ?? ''}"; hookyard send --list lists them`);
  const secret =
    values.secret ?? (values['secret-file'] ? readFileSync(values['secret-file'], 'utf8').trim() : undefined);
  const headers = Object.fromEntries(
    values.header.map((h) => {
      const i = h.indexOf(':');
      if (i < 1) throw new UsageError(`--header "${h}" is not NAME: VALUE, such as -H 'X-Request-Id: 42'`);
      return [h.slice(0, i).trim(), h.slice(i + 1).trim()];
    }),
  );
  let refused = 0;
  for (const sample of list) {
    const { status, body } = await sendSample(provider, values.url, sample, { secret, headers });
    console.log(`${provider} ${sample.name}: ${status}${body ? ` ${body}` : ''}`);
    if (status >= 300) refused++;
    if (status === 401 && !secret) console.log('  (no --secret given: this endpoint checks signatures or tokens)');
  }
  // A refusal is what a provider would retry or report: make it visible to scripts too.
  if (refused > 0) {
    console.error(`hookyard send: ${refused} of ${list.length} requests were refused`);
    process.exitCode = 1;
  }
}
