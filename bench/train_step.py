#!/usr/bin/env python
"""Training-step throughput of xresnet50 on the CPU, with and without channels-last, and peak memory of each.

One step is forward, backward and an Adam update on a batch of random images (the data pipeline is measured
separately by data_pipeline.py). Each configuration runs in its own process, so its peak resident memory
(ru_maxrss) is its own and not the largest of all the runs before it. Run it with `make bench`; a few minutes.
"""
import argparse, json, os, resource, subprocess, sys, time

from imagenette_course.cli import MIN_SIZE, whole_number

FORMATS = ('contiguous', 'channels_last')


def measure(size, fmt, bs, steps, warmup):
    "Images per second of xresnet50 training steps at `size` px in memory format `fmt`, and peak RSS in MiB"
    import torch
    import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
    from fastai.vision.models.xresnet import xresnet50
    torch.manual_seed(0)
    model, x, y = xresnet50(n_out=10), torch.randn(bs, 3, size, size), torch.randint(0, 10, (bs,))
    if fmt == 'channels_last':  # both the weights and the inputs, or convolutions convert back and forth
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt, loss_func = torch.optim.Adam(model.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss_func(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    # the first steps allocate buffers and pick kernels; of the rest, the fastest is the one least slowed by
    # other processes on the machine (as timeit does)
    return dict(size=size, format=fmt, bs=bs, images_per_s=bs / min(times[warmup:]),
                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_before_mib=rss_before,
                threads=torch.get_num_threads())


def measure_in_subprocess(size, fmt, args):
    "`measure` in a fresh Python process; its result"
    return last_json([sys.executable, __file__, '--one', str(size), fmt, '--bs', str(args.bs), '--steps',
                      str(args.steps), '--warmup', str(args.warmup)])


def last_json(cmd):
    "The JSON that the last line `cmd` prints holds; its stderr goes to ours, so that a failure shows its traceback"
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', type=whole_number(MIN_SIZE), nargs='+', default=[64, 128],
                   help="image sizes in px (default 64 128)")
    # batchnorm needs 2 images in a batch to train
    p.add_argument('--bs', type=whole_number(2), default=32, help="batch size (default 32)")
    p.add_argument('--steps', type=whole_number(1), default=4,
                   help="timed steps per configuration and round (default 4)")
    p.add_argument('--warmup', type=whole_number(0), default=2, help="untimed steps first (default 2)")
    p.add_argument('--rounds', type=whole_number(1), default=2,
                   help="rounds over all configurations, each in a new process; the best counts (default 2)")
    p.add_argument('--one', nargs=2, metavar=('SIZE', 'FORMAT'), help=argparse.SUPPRESS)  # the child process's job
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.bs, args.steps, args.warmup)))
        return

    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; xresnet50, bs {args.bs}, "
          f"{args.warmup} warm-up + {args.steps} timed steps x {args.rounds} rounds (fastest step), Adam, random inputs")
    results = {}
    for _ in range(args.rounds):  # rounds interleave the configurations, so a burst of load elsewhere hits all of them
        for size in args.sizes:
            for fmt in FORMATS:
                r = measure_in_subprocess(size, fmt, args)
                if (size, fmt) not in results or r['images_per_s'] > results[size, fmt]['images_per_s']:
                    results[size, fmt] = r
    print(f"{'px':>4} {'format':14} {'images/s':>9} {'peak RSS MiB':>13} {'RSS before steps':>17}")
    for (size, fmt), r in results.items():
        print(f"{size:4} {fmt:14} {r['images_per_s']:9.1f} {r['peak_rss_mib']:13.0f} {r['rss_before_mib']:17.0f}")
    for size in args.sizes:
        plain, cl = results[size, 'contiguous'], results[size, 'channels_last']
        print(f"{size} px, channels_last / contiguous: speed {cl['images_per_s'] / plain['images_per_s']:.2f}x, "
              f"peak memory {cl['peak_rss_mib'] / plain['peak_rss_mib']:.2f}x")
    for fmt in FORMATS:
        small, large = results[min(args.sizes), fmt], results[max(args.sizes), fmt]
        print(f"{fmt}: {min(args.sizes)} px / {max(args.sizes)} px speed "
              f"{small['images_per_s'] / large['images_per_s']:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f}; torch threads {results[args.sizes[0], FORMATS[0]]['threads']}")


if __name__ == '__main__': main()
