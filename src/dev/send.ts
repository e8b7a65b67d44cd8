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
    ...(options.secret ? providerSignature(provider, options.secret, sample.body) : {}),
    ...options.headers,
  };
  const res = await fetch(target, { method: 'POST', body: new Uint8Array(sample.body), headers });
  return { status: res.status, body: await res.text() };
}

export async function main(args: string[]): Promise<void> {
  const flags = parseFlags(sendCommand, args);
  if (!flags) return;
  const { values, positionals } = flags;
  const provider = positionals[0] as ProviderName | undefined;
  const known = Object.keys(samples);
  if (!provider || !providerNames.includes(provider)) {
    const given = provider ? `unknown provider "${provider}"` : 'which provider?';
    throw new UsageError(`${given}: type one of ${known.join(', ')}, such as hookyard send proign --url URL`);
  }
  if (!values.url) throw new UsageError(`--url is required: ${sendCommand.flags.url.description}`);
  const list = (samples[provider] ?? []).filter((s) => !values.sample || s.name.includes(values.sample));
  if (list.length === 0)
    throw new UsageError(`no sample of ${provider} matches "${values.sample ?? ''}"; hookyard send --list lists them`);
  const secret =
    values.secret ?? (values['secret-file'] ? readFileSync(values['secret-file'], 'utf8').trim() : undefined);
  const headers = Object.fromEntries(
    values.header.map((h) => {
      const i = h.indexOf(':');
      return [h.slice(0, i).trim(), h.slice(i + 1).trim()];
    }),
  );
  for (const sample of list) {
    const { status, body } = await sendSample(provider, values.url, sample, { secret, headers });
    console.log(`${provider} ${sample.name}: ${status} ${body}`);
  }
}
